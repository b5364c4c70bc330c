import CoreML
import Foundation

/// The app's whole model logic on Core ML, call for call the same as edgerec's Python replay
/// (`edgerec.export.client.OnDeviceRecommender`): recommend with the user's patch, and
/// fine-tune the patch with the closed-form `sgd_step` program, rolling back divergence.
final class EdgeRecCoreML {
    let manifest: BundleManifest
    private let recommender: MLModel
    private let stepper: MLModel
    private let ids: [String]
    private let index: [String: Int]

    init(manifest: BundleManifest, variant: String = "fp16") throws {
        self.manifest = manifest
        let config = MLModelConfiguration()
        config.computeUnits = .all
        recommender = try MLModel(contentsOf: MLModel.compileModel(at: manifest.coreMLFile(variant)), configuration: config)
        let cpu = MLModelConfiguration()
        cpu.computeUnits = .cpuOnly  // flexible batch: CPU
        stepper = try MLModel(contentsOf: MLModel.compileModel(at: manifest.sgdStepFile()), configuration: cpu)
        ids = try manifest.itemIds()
        var map: [String: Int] = [:]
        for (i, raw) in ids.enumerated() where i > 0 { map[raw] = i }
        index = map
    }

    /// Raw ids (oldest first) -> the most recent max_len indices, left-padded with the padding id.
    func encode(_ raw: [String]) -> [Int32] {
        let known = raw.compactMap { index[$0] }.suffix(manifest.maxLen)
        var out = [Int32](repeating: Int32(manifest.paddingId), count: manifest.maxLen)
        for (i, v) in known.enumerated() { out[manifest.maxLen - known.count + i] = Int32(v) }
        return out
    }

    private func array(_ values: [Float], shape: [Int]) throws -> MLMultiArray {
        let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        for (i, v) in values.enumerated() { a[i] = NSNumber(value: v) }
        return a
    }

    private func intArray(_ values: [Int32], shape: [Int]) throws -> MLMultiArray {
        let a = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .int32)
        for (i, v) in values.enumerated() {
            precondition(v >= 0 && Int(v) <= manifest.numItems, "item id \(v) is out of range [0, \(manifest.numItems)]")
            a[i] = NSNumber(value: v)
        }
        return a
    }

    private func patchFeatures(_ patch: [[Float]]) throws -> [String: MLFeatureValue] {
        var out: [String: MLFeatureValue] = [:]
        for (i, name) in manifest.patchNames.enumerated() {
            out[name] = MLFeatureValue(multiArray: try array(patch[i], shape: manifest.patchShapes[i]))
        }
        return out
    }

    func recommend(_ raw: [String], patch: [[Float]]) throws -> [(String, Float)] {
        var features = try patchFeatures(patch)
        features["history"] = MLFeatureValue(multiArray: try intArray(encode(raw), shape: [1, manifest.maxLen]))
        let out = try recommender.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        let items = out.featureValue(for: "item_ids")!.multiArrayValue!
        let scores = out.featureValue(for: "scores")!.multiArrayValue!
        return (0..<items.count).map { (ids[items[$0].intValue], scores[$0].floatValue) }
    }

    func step(histories: [Int32], targets: [Int32], patch: [[Float]], lr: Float) throws -> ([[Float]], Float) {
        var features = try patchFeatures(patch)
        features["histories"] = MLFeatureValue(multiArray: try intArray(histories, shape: [targets.count, manifest.maxLen]))
        features["targets"] = MLFeatureValue(multiArray: try intArray(targets, shape: [targets.count]))
        features["lr"] = MLFeatureValue(multiArray: try array([lr], shape: [1]))
        let out = try stepper.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        let newPatch = manifest.patchNames.map { name -> [Float] in
            let a = out.featureValue(for: "new_" + name)!.multiArrayValue!
            return (0..<a.count).map { a[$0].floatValue }
        }
        return (newPatch, out.featureValue(for: "loss")!.multiArrayValue![0].floatValue)
    }

    /// SGD on the patch with rollback (see the Python replay for the same logic).
    func fineTune(_ samples: [([String], String)], start: [[Float]], lr lr0: Float = 0.05, steps: Int = 20,
                  tolerance: Float = 1e-3) throws -> ([[Float]], [Float]) {
        let usable = samples.suffix(manifest.sgdStepMaxBatch()).filter { index[$0.1] != nil }
        guard !usable.isEmpty else { throw BundleManifest.Error.invalid("no local sample has a target known to the model") }
        let histories = usable.flatMap { encode($0.0) }
        let targets = usable.map { Int32(index[$0.1]!) }
        var lr = lr0, current = start, previous: [[Float]]? = nil, prevLoss = Float.infinity
        var losses: [Float] = []
        for _ in 0..<steps {
            let (next, loss) = try step(histories: histories, targets: targets, patch: current, lr: lr)
            if let prev = previous, !loss.isFinite || loss > prevLoss * (1 + tolerance) {
                current = prev; lr /= 2; previous = nil  // the last step diverged: undo it
                continue
            }
            if next.joined().contains(where: { !$0.isFinite }) { lr /= 2; continue }
            losses.append(loss)
            previous = current; prevLoss = loss; current = next
        }
        let (_, finalLoss) = try step(histories: histories, targets: targets, patch: current, lr: 0)
        if let prev = previous, !finalLoss.isFinite || finalLoss > prevLoss * (1 + tolerance) { current = prev } else { losses.append(finalLoss) }
        return (current, losses)
    }
}
