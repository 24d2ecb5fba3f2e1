package dev.mobilesd.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.random.TorchRandomSource;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.testing.Golden;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Every scheduler x config x step count of the golden vectors: timesteps exactly, sigmas and init_noise_sigma,
 * then a whole chain (scale_model_input and step on the recorded model outputs, LCM's noise from the same
 * generator as the initial latent), each sample within 2e-6 relative L2 of diffusers'.
 */
class SchedulerGoldenTest {
    // diffusers steps in float32, this client in double: float32 rounding over 50 DPM steps reaches 1.2e-6 on
    // some CPUs (1e-6 failed on one CI machine); a wrong formula is off by 1e-3 or more
    static final double TOLERANCE = 2e-6;

    @TestFactory
    List<DynamicTest> everyGoldenCase() {
        JSONObject section = Golden.section("schedulers");
        JSONObject configs = section.optJSONObject("configs");
        JSONArray cases = section.optJSONArray("cases");
        List<DynamicTest> tests = new ArrayList<>();
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.optJSONObject(i);
            String name = c.optString("scheduler") + " " + c.optString("config") + " " + c.optInt("steps") + " steps";
            tests.add(DynamicTest.dynamicTest(name, () -> runCase(c, configs.optJSONObject(c.optString("config")), name)));
        }
        return tests;
    }

    private static void runCase(JSONObject c, JSONObject config, String name) {
        int steps = c.optInt("steps");
        Scheduler s = Schedulers.create(c.optString("scheduler"), config, null, steps);
        JSONArray wantT = c.optJSONArray("timesteps");
        float[] t = s.timesteps();
        assertEquals(wantT.length(), t.length, name + ": number of timesteps");
        for (int k = 0; k < t.length; k++) {
            assertEquals(wantT.optDouble(k), (double) t[k], 0.0, name + ": timestep " + k);
        }
        if (c.isNull("sigmas")) {
            assertNull(s.sigmas(), name + ": sigmas");
        } else {
            JSONArray ws = c.optJSONArray("sigmas");
            float[] sig = s.sigmas();
            float[] want = new float[ws.length()];
            for (int k = 0; k < want.length; k++) {
                want[k] = (float) ws.optDouble(k);
            }
            assertEquals(want.length, sig.length, name + ": number of sigmas");
            assertTrue(Golden.relL2(sig, 0, want, 0, want.length) <= TOLERANCE, name + ": sigmas");
        }
        double wantInit = c.optDouble("init_noise_sigma");
        assertEquals(wantInit, s.initNoiseSigma(), Math.abs(wantInit) * TOLERANCE, name + ": init_noise_sigma");

        float[] samples = Golden.floats(c.optJSONObject("samples"));
        float[] outputs = Golden.floats(c.optJSONObject("model_outputs"));
        float[] scaled = Golden.floats(c.optJSONObject("scaled_model_inputs"));
        int[] shape = {1, 4, 8, 8};
        int n = 256;
        TorchRandomSource g = new TorchRandomSource(c.optLong("noise_seed"));
        float[] x0 = g.normalArray(n);
        float init = s.initNoiseSigma();
        for (int i = 0; i < n; i++) {
            x0[i] = x0[i] * init;
        }
        assertTrue(Golden.relL2(x0, 0, samples, 0, n) <= TOLERANCE, name + ": initial latent");
        Tensor x = Tensor.ofFloats(shape, x0);
        for (int k = 0; k < steps; k++) {
            Tensor in = s.scaleModelInput(x, t[k]);
            double eIn = Golden.relL2(in.floats(), 0, scaled, k * n, n);
            assertTrue(eIn <= TOLERANCE, name + ": scale_model_input at step " + k + " off by " + eIn);
            Tensor out = Tensor.ofFloats(shape, java.util.Arrays.copyOfRange(outputs, k * n, (k + 1) * n));
            x = s.step(out, t[k], x, g);
            double e = Golden.relL2(x.floats(), 0, samples, (k + 1) * n, n);
            assertTrue(e <= TOLERANCE, name + ": sample after step " + k + " off by " + e + " (relative L2)");
        }
    }

    @TestFactory
    List<DynamicTest> configsResolveAsDiffusersDoes() {
        JSONObject section = Golden.section("schedulers");
        JSONObject configs = section.optJSONObject("configs");
        JSONObject resolved = section.optJSONObject("resolved_configs");
        List<DynamicTest> tests = new ArrayList<>();
        java.util.Iterator<String> keys = resolved.keys();
        while (keys.hasNext()) {
            String key = keys.next();
            String[] parts = key.split("/");
            tests.add(DynamicTest.dynamicTest(key, () -> {
                JSONObject want = resolved.optJSONObject(key).optJSONObject("config");
                Map<String, Object> got = SchedulerConfig.resolve(parts[1], configs.optJSONObject(parts[0]), null).resolved();
                for (Map.Entry<String, Object> e : got.entrySet()) {
                    assertTrue(want.has(e.getKey()), key + ": diffusers has no key " + e.getKey());
                    Object w = want.opt(e.getKey());
                    Object v = e.getValue();
                    if (w instanceof Number) {
                        assertEquals(((Number) w).doubleValue(), ((Number) v).doubleValue(), 0.0, key + ": " + e.getKey());
                    } else if (w == JSONObject.NULL) {
                        assertNull(v, key + ": " + e.getKey());
                    } else {
                        assertEquals(w, v, key + ": " + e.getKey());
                    }
                }
            }));
        }
        return tests;
    }
}
