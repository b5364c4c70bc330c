package org.edgerec.demo

import org.json.JSONObject
import java.io.File
import java.security.MessageDigest

/**
 * The bundle contract (manifest.json, schema 1), read and verified exactly as edgerec's
 * Python `Bundle.open` does: schema version, required fields, and the sha256 of every file.
 */
class BundleManifest private constructor(val root: File, val json: JSONObject) {
    val numItems: Int = json.getJSONObject("model").getInt("num_items")
    val maxLen: Int = json.getJSONObject("model").getInt("max_len")
    val paddingId: Int = json.getJSONObject("model").getInt("padding_id")
    val topK: Int = json.getJSONObject("model").getInt("top_k")
    val patchShapes: List<Pair<String, LongArray>>
    val maxLocalBatch: Int

    init {
        val shapes = json.getJSONObject("patch").getJSONObject("shapes")
        val names = json.getJSONObject("patch").getJSONArray("names")
        patchShapes = (0 until names.length()).map { i ->
            val name = names.getString(i)
            val dims = shapes.getJSONArray(name)
            name to LongArray(dims.length()) { dims.getLong(it) }
        }
        val step = json.getJSONObject("targets").getJSONObject("executorch")
            .getJSONObject("methods").getJSONObject("sgd_step")
        maxLocalBatch = step.optInt("max_batch", 64)
    }

    fun executorchFile(variant: String): File {
        val variants = json.getJSONObject("targets").getJSONObject("executorch").getJSONObject("variants")
        require(variants.has(variant)) { "bundle has no ExecuTorch variant '$variant'" }
        return File(root, variants.getString(variant))
    }

    fun trainingProgramFile(): File? {
        val et = json.getJSONObject("targets").getJSONObject("executorch")
        return if (et.has("training_program")) File(root, et.getJSONObject("training_program").getString("file")) else null
    }

    fun itemIds(): List<String> = File(root, json.getJSONObject("ids").getString("file")).readLines()

    fun initialPatch(): List<FloatArray> = PatchStore.read(File(root, json.getJSONObject("patch").getString("init_file")), patchShapes)

    companion object {
        const val SCHEMA_VERSION = 1
        const val METHOD_RECOMMEND = "recommend"
        const val METHOD_SGD_STEP = "sgd_step"

        fun open(root: File): BundleManifest {
            val file = File(root, "manifest.json")
            require(file.exists()) { "$root: no manifest.json; not an edgerec bundle" }
            val json = JSONObject(file.readText())
            for (key in listOf("schema_version", "model", "ids", "patch", "targets", "files")) {
                require(json.has(key)) { "$file: field '$key' is missing" }
            }
            val version = json.getInt("schema_version")
            require(version == SCHEMA_VERSION) { "$file: schema_version $version is not supported (this app reads $SCHEMA_VERSION)" }
            val files = json.getJSONObject("files")
            for (rel in files.keys()) {
                val f = File(root, rel)
                require(f.exists()) { "$f: listed in the manifest but missing" }
                val expected = files.getJSONObject(rel).getString("sha256")
                val actual = sha256(f)
                require(actual == expected) { "$f: sha256 mismatch (manifest $expected, file $actual)" }
            }
            return BundleManifest(root, json)
        }

        private fun sha256(file: File): String {
            val digest = MessageDigest.getInstance("SHA-256")
            file.inputStream().use { input ->
                val buffer = ByteArray(1 shl 16)
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    digest.update(buffer, 0, n)
                }
            }
            return digest.digest().joinToString("") { "%02x".format(it) }
        }
    }
}
