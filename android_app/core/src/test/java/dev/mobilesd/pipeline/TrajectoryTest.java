package dev.mobilesd.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.testing.Golden;
import dev.mobilesd.testing.ScriptedRunners;
import dev.mobilesd.testing.TestBundles;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * The golden trajectory (a whole 8-step CFG generation of the digits model in PyTorch) through the app's own
 * pipeline loop: the UNet graph replays the recorded predictions, and the pipeline must feed it the recorded
 * inputs at every step (its tokenizer ids, its initial noise from the seed, its scheduler and CFG) and hand
 * the decoder the recorded final latent, each within 2e-6 relative.
 */
class TrajectoryTest {
    @TempDir
    Path tmp;

    @TestFactory
    List<DynamicTest> everyScheduler() throws Exception {
        JSONObject section = Golden.section("trajectory");
        JSONObject settings = section.optJSONObject("settings");
        int[] ids = Golden.ints(section.optJSONObject("input_ids"));
        Path dir = TestBundles.write(tmp.resolve("bundle"), TestBundles.manifest("batch", 2,
                Collections.singletonList(TestBundles.unetGraph(2))));
        JSONArray cases = section.optJSONArray("cases");
        List<DynamicTest> tests = new ArrayList<>();
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.optJSONObject(i);
            tests.add(DynamicTest.dynamicTest(c.optString("scheduler"), () -> replay(dir, settings, ids, c)));
        }
        return tests;
    }

    private static void replay(Path dir, JSONObject settings, int[] ids, JSONObject c) {
        String scheduler = c.optString("scheduler");
        int steps = settings.optInt("steps");
        float[] inputs = Golden.floats(c.optJSONObject("unet_inputs"));
        float[] predictions = Golden.floats(c.optJSONObject("unet_predictions"));
        float[] latents = Golden.floats(c.optJSONObject("latents"));
        float[] image = Golden.floats(c.optJSONObject("image"));
        JSONArray timesteps = c.optJSONArray("timesteps");
        int per = 2 * 4 * 8 * 8;
        int[] step = {0};
        List<int[]> encoded = new ArrayList<>();
        ScriptedRunners runners = new ScriptedRunners()
                .on("text_encoder", in -> {
                    encoded.add(in.get("input_ids").ints().clone());
                    return ScriptedRunners.one("last_hidden_state", Tensor.zeros(new int[] {1, 77, 32}));
                })
                .on("unet", in -> {
                    int k = step[0]++;
                    assertEquals(timesteps.optDouble(k), in.get("timestep").floats()[0], 0.0, scheduler + " timestep " + k);
                    double e = Golden.relL2(in.get("sample").floats(), 0, inputs, k * per, per);
                    assertTrue(e <= 2e-6, scheduler + ": UNet input at step " + k + " off by " + e);
                    return ScriptedRunners.one("noise_pred", Tensor.ofFloats(new int[] {2, 4, 8, 8},
                            Arrays.copyOfRange(predictions, k * per, (k + 1) * per)));
                })
                .on("vae_decoder", in -> {
                    double e = Golden.relL2(in.get("latent").floats(), 0, latents, steps * 256, 256);
                    assertTrue(e <= 2e-6, scheduler + ": final latent off by " + e);
                    return ScriptedRunners.one("image", Tensor.ofFloats(new int[] {1, 32, 32, 3}, image));
                });
        Bundle bundle = Bundle.open(dir);
        try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle, runners,
                new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
            GeneratedImage img = p.generate(new GenerationConfig(settings.optString("prompt"),
                    settings.optString("negative_prompt"), steps, settings.optDouble("guidance"), settings.optLong("seed"),
                    scheduler), StageListener.NONE);
            assertEquals(steps, step[0], "UNet calls");
            assertEquals(2, encoded.size(), "text encoder calls (negative prompt, prompt)");
            assertArrayEquals(Arrays.copyOfRange(ids, 0, 77), encoded.get(0), "negative prompt ids");
            assertArrayEquals(Arrays.copyOfRange(ids, 77, 154), encoded.get(1), "prompt ids");
            int[] px = img.argb();
            for (int i = 0; i < px.length; i++) {
                int r = (int) Math.rint(image[3 * i] * 255f);
                assertEquals(Math.max(0, Math.min(255, r)), (px[i] >> 16) & 0xFF, "red of pixel " + i);
            }
        }
    }
}
