package org.edgerec.demo

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Per-user patch files: float32 little-endian, tensors concatenated row-major in manifest order. */
object PatchStore {
    fun read(file: File, shapes: List<Pair<String, LongArray>>): List<FloatArray> {
        val buffer = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN)
        val sizes = shapes.map { (_, dims) -> dims.fold(1L) { a, b -> a * b }.toInt() }
        require(buffer.remaining() == 4 * sizes.sum()) { "$file: ${buffer.remaining() / 4} floats, expected ${sizes.sum()}" }
        return sizes.map { n -> FloatArray(n) { buffer.float } }
    }

    /** Atomic: written to a temporary file, then renamed over the old patch. */
    fun write(file: File, patch: List<FloatArray>) {
        val buffer = ByteBuffer.allocate(4 * patch.sumOf { it.size }).order(ByteOrder.LITTLE_ENDIAN)
        patch.forEach { p -> p.forEach { buffer.putFloat(it) } }
        val tmp = File(file.parentFile, ".${file.name}.tmp")
        tmp.outputStream().use { it.write(buffer.array()); it.fd.sync() }
        check(tmp.renameTo(file)) { "could not replace $file" }
    }
}
