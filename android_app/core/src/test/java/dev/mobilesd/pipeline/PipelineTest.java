package dev.mobilesd.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.json.Json;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.testing.ScriptedRunners;
import dev.mobilesd.testing.TestBundles;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The loop's CFG modes, the resource policies, and what it refuses. */
class PipelineTest {
    @TempDir
    Path tmp;

    /** Runners where the text encoder marks its output by prompt, so the UNet can see which context it got. */
    private static ScriptedRunners runners(int batch, int[] unetCalls, float[][] lastContextMarks) {
        return new ScriptedRunners()
                .on("text_encoder", in -> {
                    float mark = in.get("input_ids").ints()[1] == 49407 ? 0f : 1f;   // empty prompt -> 0
                    float[] h = new float[77 * 32];
                    Arrays.fill(h, mark);
                    return ScriptedRunners.one("last_hidden_state", Tensor.ofFloats(new int[] {1, 77, 32}, h));
                })
                .on("unet", in -> {
                    unetCalls[0]++;
                    Tensor ctx = in.get("encoder_hidden_states");
                    float[] marks = new float[batch];
                    for (int b = 0; b < batch; b++) {
                        marks[b] = ctx.floats()[b * 77 * 32];
                    }
                    lastContextMarks[0] = marks;
                    float[] eps = new float[batch * 256];
                    for (int b = 0; b < batch; b++) {
                        Arrays.fill(eps, b * 256, (b + 1) * 256, marks[b] == 0f ? 0.1f : 0.3f);
                    }
                    return ScriptedRunners.one("noise_pred", Tensor.ofFloats(new int[] {batch, 4, 8, 8}, eps));
                })
                .on("vae_decoder", in -> ScriptedRunners.one("image", Tensor.zeros(new int[] {1, 32, 32, 3})));
    }

    private Bundle bundle(String mode, int batch, String name) throws Exception {
        return Bundle.open(TestBundles.write(tmp.resolve(name), TestBundles.manifest(mode, batch,
                Collections.singletonList(TestBundles.unetGraph(batch)))));
    }

    @Test
    void batchTwoSendsUnconditionalThenConditionalInOneCall() throws Exception {
        int[] calls = {0};
        float[][] marks = {null};
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle("batch", 2, "b2"), runners(2, calls, marks),
                new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
            p.generate(new GenerationConfig("a digit", null, 3, 7.5, 0, "ddim"), StageListener.NONE);
        }
        assertEquals(3, calls[0]);
        assertEquals(0f, marks[0][0], 0f);
        assertEquals(1f, marks[0][1], 0f);
    }

    @Test
    void batchOneMakesTwoCallsPerStepAndNoneMakesOne() throws Exception {
        int[] calls = {0};
        float[][] marks = {null};
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle("sequential", 1, "b1"), runners(1, calls, marks),
                new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
            p.generate(new GenerationConfig("a digit", "", 3, 7.5, 0, "dpm"), StageListener.NONE);
            assertEquals(6, calls[0]);
            calls[0] = 0;
            p.generate(new GenerationConfig("a digit", "", 3, 1.0, 0, "dpm"), StageListener.NONE);  // guidance 1: no CFG
            assertEquals(3, calls[0]);
            assertEquals(1f, marks[0][0], 0f);
        }
        calls[0] = 0;
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle("none", 1, "n1"), runners(1, calls, marks),
                new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
            p.generate(new GenerationConfig("a digit", "", 3, 7.5, 0, "dpm"), StageListener.NONE);
            assertEquals(3, calls[0]);
            assertEquals(1f, marks[0][0], 0f);
        }
    }

    @Test
    void guidanceIsUncondPlusScaleTimesTheDifference() {
        Tensor u = Tensor.ofFloats(new int[] {1, 2}, new float[] {0.1f, -1f});
        Tensor c = Tensor.ofFloats(new int[] {1, 2}, new float[] {0.3f, 2f});
        float[] g = StableDiffusionPipeline.guide(u, c, 7.5f).floats();
        assertEquals(0.1f + 7.5f * (0.3f - 0.1f), g[0], 0f);
        assertEquals(-1f + 7.5f * 3f, g[1], 0f);
    }

    @Test
    void lowMemoryKeepsOneStageResidentAndRecordsPeakMemory() throws Exception {
        int[] calls = {0};
        float[][] marks = {null};
        ScriptedRunners r = runners(2, calls, marks);
        int[] maxResident = {0};
        ResourceManager rm = new ResourceManager(ResourceManager.Policy.LOW_MEMORY, new ProcStatusMemoryProbe());
        StageListener watch = (name, s) -> maxResident[0] = Math.max(maxResident[0], r.resident());
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle("batch", 2, "lm"), r, rm)) {
            assertEquals(0, p.loadResources(), 0.0);
            p.generate(new GenerationConfig("a digit", null, 2, 7.5, 0, "euler"), watch);
            assertEquals(0, r.resident(), "every graph released after the run");
            assertEquals(Arrays.asList("text_encoder", "unet", "vae_decoder"), r.opened);
            assertEquals(1, maxResident[0], "at most one stage's graphs open");
            assertTrue(rm.probe().peakBytes() > 0, "peak memory recorded");
        }
    }

    @Test
    void aSchedulerTheBundleDoesNotListIsRefused() throws Exception {
        Path dir = tmp.resolve("s");
        JSONObject m = TestBundles.manifest("batch", 2, Collections.singletonList(TestBundles.unetGraph(2)));
        Json.put(m.optJSONObject("scheduler"), "supported", new JSONArray(Arrays.asList("dpm")));
        TestBundles.write(dir, m);
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(Bundle.open(dir), runners(2, new int[1], new float[1][]),
                new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
            MobileSdException e = assertThrows(MobileSdException.class,
                    () -> p.generate(new GenerationConfig("x", null, 2, 7.5, 0, "lcm"), StageListener.NONE));
            assertTrue(e.problem().contains("lcm") && e.fix().contains("dpm"), e.getMessage());
        }
    }
}
