package dev.mobilesd.benchmark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.pipeline.GenerationConfig;
import dev.mobilesd.pipeline.ProcStatusMemoryProbe;
import dev.mobilesd.pipeline.ResourceManager;
import dev.mobilesd.pipeline.StableDiffusionPipeline;
import dev.mobilesd.pipeline.StageListener;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.testing.ScriptedRunners;
import dev.mobilesd.testing.TestBundles;
import java.nio.file.Path;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A benchmark through the protocol, written as a latency report that the repository's schema accepts. */
class LatencyReportWriterTest {
    @TempDir
    Path tmp;

    @Test
    void reportOfAChunkedBundleIsValidAndCountsEverySample() throws Exception {
        Path dir = TestBundles.write(tmp.resolve("b"), TestBundles.manifest("batch", 2,
                TestBundles.threeChunkUnet()));
        ScriptedRunners r = new ScriptedRunners()
                .on("text_encoder", in -> ScriptedRunners.one("last_hidden_state", Tensor.zeros(new int[] {1, 77, 32})))
                .on("unet_chunk0", in -> {
                    java.util.Map<String, Tensor> out = new java.util.HashMap<>();
                    out.put("hidden", Tensor.zeros(new int[] {2, 4, 8, 8}));
                    out.put("temb", Tensor.zeros(new int[] {2, 8}));
                    out.put("skip_0", Tensor.zeros(new int[] {2, 4, 8, 8}));
                    return out;
                })
                .on("unet_chunk1", in -> ScriptedRunners.one("hidden", Tensor.zeros(new int[] {2, 4, 8, 8})))
                .on("unet_chunk2", in -> ScriptedRunners.one("noise_pred", Tensor.zeros(new int[] {2, 4, 8, 8})))
                .on("vae_decoder", in -> ScriptedRunners.one("image", Tensor.zeros(new int[] {1, 32, 32, 3})));
        Bundle bundle = Bundle.open(dir);
        GenerationConfig cfg = new GenerationConfig("a digit", null, 4, Double.NaN, 3, null);
        DeviceInfo device = new DeviceInfo("unit test JVM", null, "Linux", null, null, 0, null, "unit test",
                "Not a phone: a unit test.");
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle, r,
                new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
            double load = p.loadResources();
            BenchmarkProtocol.Result res = BenchmarkProtocol.run(p, cfg, 1, 3, load, StageListener.NONE);
            JSONObject report = LatencyReportWriter.build(res, p, cfg, device, "test runtime", 3);
            List<String> errors = TestBundles.latencyReportSchema().validate(report);
            assertTrue(errors.isEmpty(), "schema errors: " + errors);
            JSONObject stages = report.optJSONObject("stages");
            assertEquals(12, stages.optJSONObject("unet_step").optJSONArray("samples_s").length());
            assertEquals(12, stages.optJSONObject("unet_chunk_2").optJSONArray("samples_s").length());
            assertEquals(3, stages.optJSONObject("end_to_end").optJSONArray("samples_s").length());
            assertEquals("app", report.optJSONObject("measured_by").optString("kind"));
            assertEquals("batch", report.optJSONObject("settings").optString("cfg_mode"));
            assertEquals(7.5, report.optJSONObject("settings").optDouble("guidance"), 0.0);
            assertEquals("dpm", report.optJSONObject("settings").optString("scheduler"));
            JSONArray steps = report.optJSONArray("steps");
            assertEquals(4, steps.length());
            assertEquals(3, steps.optJSONObject(0).optJSONArray("chunks_s").length());
            assertEquals(bundle.manifestSha256, report.optJSONObject("bundle").optString("manifest_sha256"));
            assertEquals(4 * 4, r.calls.get("unet_chunk1").intValue(), "warm-up plus 3 runs of 4 steps");
        }
    }

    @Test
    void sampleStatisticsFollowPythonsStatisticsModule() {
        // statistics.median / stdev / quantiles(n=10, method="inclusive")[-1] of [0.3, 0.1, 0.4, 0.15, 0.2]
        SampleTimer t = new SampleTimer();
        for (double x : new double[] {0.3, 0.1, 0.4, 0.15, 0.2}) {
            t.add(x);
        }
        assertEquals(0.2, t.median(), 1e-15);
        assertEquals(0.12041594578792296, t.stdev(), 1e-15);
        assertEquals(0.36, t.p90(), 1e-15);
    }
}
