package org.edgerec.demo

import android.app.Activity
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import java.io.File
import kotlin.concurrent.thread

/**
 * Minimal demo: recommendations for a typed history, on-device personalisation of the
 * user's patch on that history, and an on-device latency benchmark.
 *
 * The bundle is pushed to the app's files directory (ExecuTorch loads from a file path, not
 * from assets): adb push bundle /data/local/tmp/edgerec && adb shell run-as org.edgerec.demo
 * cp -r /data/local/tmp/edgerec files/bundle  (see android_demo/README.md).
 */
class MainActivity : Activity() {
    private lateinit var model: EdgeRecModel
    private lateinit var manifest: BundleManifest
    private val patchFile by lazy { File(filesDir, "user_patch.bin") }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        val output = findViewById<TextView>(R.id.output)
        val history = findViewById<EditText>(R.id.history)
        try {
            manifest = BundleManifest.open(File(filesDir, "bundle"))
            model = EdgeRecModel(manifest)
        } catch (e: Exception) {
            output.text = "cannot open the bundle: ${e.message}"
            return
        }
        fun patch(): List<FloatArray> =
            if (patchFile.exists()) PatchStore.read(patchFile, manifest.patchShapes) else manifest.initialPatch()
        fun raw(): List<String> = history.text.toString().split(Regex("\\s+")).filter { it.isNotBlank() }

        findViewById<Button>(R.id.recommend).setOnClickListener {
            val recs = model.recommend(raw(), patch())
            output.text = recs.joinToString("\n") { (id, score) -> "%-12s %.4f".format(id, score) }
        }
        findViewById<Button>(R.id.finetune).setOnClickListener {
            thread {
                val items = raw()
                // every prefix of the typed history predicts its next item
                val samples = (1 until items.size).map { items.subList(0, it) to items[it] }
                val (tuned, losses) = model.fineTune(samples, patch())
                PatchStore.write(patchFile, tuned)
                runOnUiThread { output.text = "patch updated; loss ${losses.firstOrNull()} -> ${losses.lastOrNull()}" }
            }
        }
        findViewById<Button>(R.id.bench).setOnClickListener {
            thread {
                val (p50, p90) = model.benchmark()
                runOnUiThread { output.text = "recommend latency: p50 %.3f ms, p90 %.3f ms".format(p50, p90) }
            }
        }
    }
}
