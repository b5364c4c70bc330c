import SwiftUI

@main
struct EdgeRecDemoApp: App {
    var body: some Scene { WindowGroup { ContentView() } }
}

/// Recommendations for a typed history, on-device personalisation, and a latency benchmark.
/// The bundle directory is added to the app's Documents folder (Finder / Files app sharing).
struct ContentView: View {
    @State private var history = ""
    @State private var output = ""
    private let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]

    private func model() throws -> EdgeRecCoreML {
        try EdgeRecCoreML(manifest: BundleManifest.open(documents.appendingPathComponent("bundle")))
    }

    private var patchURL: URL { documents.appendingPathComponent("user_patch.bin") }

    private func patch(_ m: EdgeRecCoreML) throws -> [[Float]] {
        FileManager.default.fileExists(atPath: patchURL.path)
            ? try PatchStore.read(patchURL, shapes: m.manifest.patchShapes) : try m.manifest.initialPatch()
    }

    var body: some View {
        VStack(alignment: .leading) {
            TextField("history: raw item ids, oldest first", text: $history)
            HStack {
                Button("Recommend") {
                    do {
                        let m = try model()
                        output = try m.recommend(raw(), patch: patch(m)).map { "\($0.0)  \(String(format: "%.4f", $0.1))" }.joined(separator: "\n")
                    } catch { output = "\(error)" }
                }
                Button("Personalise") {
                    do {
                        let m = try model(), items = raw()
                        let samples = (1..<max(items.count, 1)).map { (Array(items[0..<$0]), items[$0]) }
                        let (tuned, losses) = try m.fineTune(samples, start: patch(m))
                        try PatchStore.write(patchURL, patch: tuned)
                        output = "patch updated; loss \(losses.first ?? .nan) -> \(losses.last ?? .nan)"
                    } catch { output = "\(error)" }
                }
                Button("Benchmark") {
                    do {
                        let m = try model(), p = try patch(m), items = raw()
                        for _ in 0..<10 { _ = try m.recommend(items, patch: p) }
                        var times: [Double] = []
                        for _ in 0..<200 {
                            let t0 = Date()
                            _ = try m.recommend(items, patch: p)
                            times.append(Date().timeIntervalSince(t0) * 1000)
                        }
                        times.sort()
                        output = String(format: "recommend latency: p50 %.3f ms, p90 %.3f ms", times[100], times[180])
                    } catch { output = "\(error)" }
                }
            }
            ScrollView { Text(output).font(.system(.footnote, design: .monospaced)) }
        }.padding()
    }

    private func raw() -> [String] { history.split(whereSeparator: { $0 == " " }).map(String.init) }
}
