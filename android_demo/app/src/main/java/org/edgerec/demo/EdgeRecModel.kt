package org.edgerec.demo

import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The app's whole model logic, call for call the same as edgerec's Python replay
 * (`edgerec.export.client.OnDeviceRecommender`), which the Python tests run against the
 * exported artifacts.
 */
class EdgeRecModel(private val manifest: BundleManifest, variant: String = "fp32") {
    private val module: Module = Module.load(manifest.executorchFile(variant).absolutePath)
    private val ids: List<String> = manifest.itemIds()
    private val index: Map<String, Int> = ids.withIndex().drop(1).associate { it.value to it.index }

    /** Raw ids (oldest first) -> the most recent max_len indices, left-padded with the padding id. */
    fun encode(rawHistory: List<String>): LongArray {
        val known = rawHistory.mapNotNull { index[it] }.takeLast(manifest.maxLen)
        val out = LongArray(manifest.maxLen) { manifest.paddingId.toLong() }
        known.forEachIndexed { i, v -> out[manifest.maxLen - known.size + i] = v.toLong() }
        return out
    }

    private fun checkHistory(history: LongArray) {
        require(history.size % manifest.maxLen == 0) { "history length ${history.size} is not a multiple of ${manifest.maxLen}" }
        history.forEach { require(it in 0..manifest.numItems) { "item id $it is out of range [0, ${manifest.numItems}]" } }
    }

    private fun patchValues(patch: List<FloatArray>): Array<EValue> =
        patch.zip(manifest.patchShapes).map { (p, shape) -> EValue.from(Tensor.fromBlob(p, shape.second)) }.toTypedArray()

    fun recommend(rawHistory: List<String>, patch: List<FloatArray>): List<Pair<String, Float>> {
        val history = encode(rawHistory)
        checkHistory(history)
        val out = module.execute(
            BundleManifest.METHOD_RECOMMEND,
            EValue.from(Tensor.fromBlob(history, longArrayOf(1, manifest.maxLen.toLong()))),
            *patchValues(patch),
        )
        val items = out[0].toTensor().dataAsLongArray
        val scores = out[1].toTensor().dataAsFloatArray
        return items.indices.map { ids[items[it].toInt()] to scores[it] }
    }

    /** One sgd_step call: returns the new patch and the loss at the old patch. */
    fun step(histories: LongArray, targets: LongArray, patch: List<FloatArray>, lr: Float): Pair<List<FloatArray>, Float> {
        checkHistory(histories)
        val batch = targets.size
        require(batch in 1..manifest.maxLocalBatch) { "a step takes 1..${manifest.maxLocalBatch} samples, got $batch" }
        targets.forEach { require(it in 1..manifest.numItems) { "target $it is out of range [1, ${manifest.numItems}]" } }
        val out = module.execute(
            BundleManifest.METHOD_SGD_STEP,
            EValue.from(Tensor.fromBlob(histories, longArrayOf(batch.toLong(), manifest.maxLen.toLong()))),
            EValue.from(Tensor.fromBlob(targets, longArrayOf(batch.toLong()))),
            *patchValues(patch),
            EValue.from(Tensor.fromBlob(floatArrayOf(lr), longArrayOf(1))),
        )
        val newPatch = (0 until manifest.patchShapes.size).map { out[it].toTensor().dataAsFloatArray }
        return newPatch to out[manifest.patchShapes.size].toTensor().dataAsFloatArray[0]
    }

    /**
     * SGD on the patch with rollback: a step whose result is not finite, or after which the
     * loss rose by more than [tolerance], is undone and the learning rate halved.
     */
    fun fineTune(samples: List<Pair<List<String>, String>>, start: List<FloatArray>, lr0: Float = 0.05f,
                 steps: Int = 20, tolerance: Float = 1e-3f): Pair<List<FloatArray>, List<Float>> {
        val usable = samples.takeLast(manifest.maxLocalBatch).filter { index.containsKey(it.second) }
        require(usable.isNotEmpty()) { "no local sample has a target item known to the model" }
        val histories = usable.flatMap { encode(it.first).toList() }.toLongArray()
        val targets = LongArray(usable.size) { index.getValue(usable[it].second).toLong() }
        var lr = lr0
        var current = start
        var previous: List<FloatArray>? = null
        var prevLoss = Float.POSITIVE_INFINITY
        val losses = mutableListOf<Float>()
        repeat(steps) {
            val (next, loss) = step(histories, targets, current, lr)
            val prev = previous
            if (prev != null && (!loss.isFinite() || loss > prevLoss * (1 + tolerance))) {
                current = prev; lr /= 2; previous = null   // the last step diverged: undo it
                return@repeat
            }
            if (next.any { p -> p.any { !it.isFinite() } }) { lr /= 2; return@repeat }
            losses.add(loss)
            previous = current; prevLoss = loss; current = next
        }
        val (_, finalLoss) = step(histories, targets, current, 0f)
        val prev = previous
        if (prev != null && (!finalLoss.isFinite() || finalLoss > prevLoss * (1 + tolerance))) current = prev
        else losses.add(finalLoss)
        return current to losses
    }

    /** p50/p90 latency of recommend after warm-up, in milliseconds. */
    fun benchmark(runs: Int = 200): Pair<Double, Double> {
        val history = LongArray(manifest.maxLen) { (it % manifest.numItems + 1).toLong() }
        val patch = manifest.initialPatch()
        val input = EValue.from(Tensor.fromBlob(history, longArrayOf(1, manifest.maxLen.toLong())))
        repeat(10) { module.execute(BundleManifest.METHOD_RECOMMEND, input, *patchValues(patch)) }
        val times = (0 until runs).map {
            val t0 = System.nanoTime()
            module.execute(BundleManifest.METHOD_RECOMMEND, input, *patchValues(patch))
            (System.nanoTime() - t0) / 1e6
        }.sorted()
        return times[runs / 2] to times[(runs * 9) / 10]
    }
}
