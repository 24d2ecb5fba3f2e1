package dev.mobilesd.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.bundle.Manifest;
import dev.mobilesd.json.Json;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.testing.ScriptedRunners;
import dev.mobilesd.testing.TestBundles;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;

/** Chunk chaining by tensor name with meta.aliases (docs/manifest.md), on three chunks shaped like a real split. */
class UnetTest {
    private static Tensor fill(float v) {
        float[] x = new float[512];
        Arrays.fill(x, v);
        return Tensor.ofFloats(new int[] {2, 4, 8, 8}, x);
    }

    @Test
    void chunksReadTheirInputsByNameAndAliases() {
        Manifest m = Manifest.parse(TestBundles.manifest("batch", 2, TestBundles.threeChunkUnet()));
        ScriptedRunners r = new ScriptedRunners()
                .on("unet_chunk0", in -> {
                    Map<String, Tensor> out = new HashMap<>();
                    float s = in.get("sample").floats()[0];
                    out.put("hidden", fill(s + 1));                       // 2
                    out.put("temb", Tensor.ofFloats(new int[] {2, 8}, new float[16]));
                    out.put("skip_0", fill(10 * s));                      // 10
                    return out;
                })
                .on("unet_chunk1", in -> ScriptedRunners.one("hidden",
                        fill(in.get("hidden").floats()[0] * in.get("skip_1").floats()[0])))   // 2 * 2 = 4
                .on("unet_chunk2", in -> ScriptedRunners.one("noise_pred",
                        fill(in.get("hidden").floats()[0] + in.get("skip_0").floats()[0] + in.get("temb").floats().length)));
        List<ManagedGraph> chunks = new ArrayList<>();
        for (GraphSpec g : m.unetGraphs()) {
            ManagedGraph mg = new ManagedGraph(g, Paths.get(g.file), r);
            mg.load();
            chunks.add(mg);
        }
        Unet unet = new Unet(chunks, 2);
        List<String> timed = new ArrayList<>();
        Tensor out = unet.predictNoise(fill(1), 500f, Tensor.zeros(new int[] {2, 77, 32}), (name, s) -> timed.add(name));
        assertEquals(4 + 10 + 16, out.floats()[0], 0f);
        assertEquals(Arrays.asList("unet_chunk_0", "unet_chunk_1", "unet_chunk_2"), timed);
    }

    @Test
    void aChunkReadingATensorNoEarlierChunkMakesIsRefused() {
        List<JSONObject> g = TestBundles.threeChunkUnet();
        Json.put(g.get(0).optJSONObject("meta"), "aliases", new JSONObject());   // drop skip_1 = hidden
        Manifest m = Manifest.parse(TestBundles.manifest("batch", 2, g));
        List<ManagedGraph> chunks = new ArrayList<>();
        for (GraphSpec s : m.unetGraphs()) {
            chunks.add(new ManagedGraph(s, Paths.get(s.file), new ScriptedRunners()));
        }
        MobileSdException e = assertThrows(MobileSdException.class, () -> new Unet(chunks, 2));
        assertTrue(e.problem().contains("skip_1"), e.getMessage());
    }
}
