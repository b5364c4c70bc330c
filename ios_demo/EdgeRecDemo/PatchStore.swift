import Foundation

/// Per-user patch files: float32 little-endian, tensors concatenated row-major in manifest order.
enum PatchStore {
    static func read(_ url: URL, shapes: [[Int]]) throws -> [[Float]] {
        let data = try Data(contentsOf: url)
        let sizes = shapes.map { $0.reduce(1, *) }
        guard data.count == 4 * sizes.reduce(0, +) else {
            throw BundleManifest.Error.invalid("\(url.path): \(data.count / 4) floats, expected \(sizes.reduce(0, +))")
        }
        let floats: [Float] = data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.load(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
        var out: [[Float]] = []
        var start = 0
        for n in sizes { out.append(Array(floats[start..<start + n])); start += n }
        return out
    }

    /// Atomic: Data.write(options: .atomic) writes a temporary file and renames it.
    static func write(_ url: URL, patch: [[Float]]) throws {
        var data = Data()
        for value in patch.joined() { withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        try data.write(to: url, options: .atomic)
    }
}
