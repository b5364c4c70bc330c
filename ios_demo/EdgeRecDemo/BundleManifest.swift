import CryptoKit
import Foundation

/// The bundle contract (manifest.json, schema 1), read and verified exactly as edgerec's
/// Python `Bundle.open` does: schema version, required fields, and the sha256 of every file.
struct BundleManifest {
    static let schemaVersion = 1
    static let methodRecommend = "recommend"
    static let methodSgdStep = "sgd_step"

    let root: URL
    let json: [String: Any]
    let numItems: Int
    let maxLen: Int
    let paddingId: Int
    let topK: Int
    let patchNames: [String]
    let patchShapes: [[Int]]

    enum Error: Swift.Error, CustomStringConvertible {
        case invalid(String)
        var description: String { if case let .invalid(m) = self { return m }; return "" }
    }

    static func open(_ root: URL) throws -> BundleManifest {
        let file = root.appendingPathComponent("manifest.json")
        guard let data = try? Data(contentsOf: file),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Error.invalid("\(file.path): missing or not JSON; not an edgerec bundle")
        }
        for key in ["schema_version", "model", "ids", "patch", "targets", "files"] where json[key] == nil {
            throw Error.invalid("\(file.path): field '\(key)' is missing")
        }
        guard json["schema_version"] as? Int == schemaVersion else {
            throw Error.invalid("\(file.path): schema_version \(json["schema_version"] ?? "?") is not supported (this app reads \(schemaVersion))")
        }
        let files = json["files"] as? [String: [String: Any]] ?? [:]
        for (rel, info) in files {
            let url = root.appendingPathComponent(rel)
            guard let bytes = try? Data(contentsOf: url) else { throw Error.invalid("\(url.path): listed in the manifest but missing") }
            let actual = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
            guard actual == info["sha256"] as? String else {
                throw Error.invalid("\(url.path): sha256 mismatch (manifest \(info["sha256"] ?? "?"), file \(actual))")
            }
        }
        let model = json["model"] as! [String: Any]
        let patch = json["patch"] as! [String: Any]
        let names = patch["names"] as! [String]
        let shapes = patch["shapes"] as! [String: [Int]]
        return BundleManifest(root: root, json: json, numItems: model["num_items"] as! Int, maxLen: model["max_len"] as! Int,
                              paddingId: model["padding_id"] as! Int, topK: model["top_k"] as! Int,
                              patchNames: names, patchShapes: names.map { shapes[$0]! })
    }

    func coreMLFile(_ variant: String) throws -> URL {
        let coreml = (json["targets"] as? [String: Any])?["coreml"] as? [String: Any]
        guard let rel = (coreml?["variants"] as? [String: String])?[variant] else {
            throw Error.invalid("bundle has no Core ML variant '\(variant)'")
        }
        return root.appendingPathComponent(rel)
    }

    func sgdStepFile() throws -> URL {
        let coreml = (json["targets"] as? [String: Any])?["coreml"] as? [String: Any]
        let methods = coreml?["methods"] as? [String: Any]
        guard let rel = (methods?[Self.methodSgdStep] as? [String: Any])?["file"] as? String else {
            throw Error.invalid("bundle has no Core ML \(Self.methodSgdStep) program")
        }
        return root.appendingPathComponent(rel)
    }

    /// Most local samples one sgd_step call takes (the program's flexible batch range).
    func sgdStepMaxBatch() -> Int {
        let coreml = (json["targets"] as? [String: Any])?["coreml"] as? [String: Any]
        let methods = coreml?["methods"] as? [String: Any]
        return (methods?[Self.methodSgdStep] as? [String: Any])?["max_batch"] as? Int ?? 64
    }

    func itemIds() throws -> [String] {
        let ids = (json["ids"] as! [String: Any])["file"] as! String
        return try String(contentsOf: root.appendingPathComponent(ids), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    func initialPatch() throws -> [[Float]] {
        let rel = (json["patch"] as! [String: Any])["init_file"] as! String
        return try PatchStore.read(root.appendingPathComponent(rel), shapes: patchShapes)
    }
}
