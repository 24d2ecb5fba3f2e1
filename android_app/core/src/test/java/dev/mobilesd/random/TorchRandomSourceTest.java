package dev.mobilesd.random;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.mobilesd.testing.Golden;
import java.util.ArrayList;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/** torch.randn for the golden seeds and shapes, bit for bit (vector path, tail re-draw, scalar path, streams). */
class TorchRandomSourceTest {
    private static void assertBitExact(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what + ": element count");
        int bad = 0;
        int first = -1;
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                bad++;
                if (first < 0) {
                    first = i;
                }
            }
        }
        assertEquals(0, bad, what + ": " + bad + " of " + want.length + " values differ, first at " + first
                + (first >= 0 ? " (torch " + want[first] + ", java " + got[first] + ")" : ""));
    }

    @TestFactory
    List<DynamicTest> everyGoldenSeedAndShape() {
        JSONObject section = Golden.section("randn");
        JSONArray cases = section.optJSONArray("cases");
        List<DynamicTest> tests = new ArrayList<>();
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.optJSONObject(i);
            long seed = c.optLong("seed");
            int[] shape = Golden.shape(c.optJSONObject("values"));
            String name = "seed " + seed + " shape " + java.util.Arrays.toString(shape);
            tests.add(DynamicTest.dynamicTest(name, () -> {
                float[] want = Golden.floats(c.optJSONObject("values"));
                assertBitExact(want, new TorchRandomSource(seed).normalArray(want.length), name);
            }));
        }
        return tests;
    }

    @Test
    void oneGeneratorDrawingSeveralShapesInARow() {
        JSONObject stream = Golden.section("randn").optJSONObject("stream");
        TorchRandomSource g = new TorchRandomSource(stream.optLong("seed"));
        JSONArray draws = stream.optJSONArray("draws");
        for (int k = 0; k < draws.length(); k++) {
            float[] want = Golden.floats(draws.optJSONObject(k).optJSONObject("values"));
            assertBitExact(want, g.normalArray(want.length), "stream draw " + k);
        }
    }

    @Test
    void goldenVectorsComeFromAnAvxHost() {
        // the Cephes-with-FMA path is what AVX2 / AVX-512 torch builds run; other hosts write other last bits
        String cap = Golden.section("randn").optString("cpu_capability");
        org.junit.jupiter.api.Assertions.assertTrue(cap.startsWith("AVX"), "golden randn written on a " + cap
                + " host: torch's CPU randn there uses libm, which this port does not follow");
    }
}
