package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * A bundle's raw diffusers {@code scheduler_config.json} (for SD 1.x a PNDMScheduler config) resolved for one
 * scheduler class the way diffusers' {@code from_config} does it: keys the class takes are read from the
 * file, the others get the class's defaults (diffusers 0.42 signatures), keys the class does not take are
 * ignored. The manifest's {@code scheduler.timestep_spacing}, when present, overrides the file.
 */
public final class SchedulerConfig {
    /** Defaults of each scheduler class, for the keys this client reads. */
    private static final Map<String, Map<String, Object>> DEFAULTS = new HashMap<>();

    static {
        Map<String, Object> common = new LinkedHashMap<>();
        common.put("num_train_timesteps", 1000);
        common.put("beta_start", 0.0001);
        common.put("beta_end", 0.02);
        common.put("beta_schedule", "linear");
        common.put("trained_betas", null);
        common.put("prediction_type", "epsilon");
        common.put("steps_offset", 0);
        common.put("rescale_betas_zero_snr", false);

        Map<String, Object> dpm = new LinkedHashMap<>(common);
        dpm.put("solver_order", 2);
        dpm.put("thresholding", false);
        dpm.put("algorithm_type", "dpmsolver++");
        dpm.put("solver_type", "midpoint");
        dpm.put("lower_order_final", true);
        dpm.put("euler_at_final", false);
        dpm.put("use_karras_sigmas", false);
        dpm.put("use_exponential_sigmas", false);
        dpm.put("use_beta_sigmas", false);
        dpm.put("use_lu_lambdas", false);
        dpm.put("use_flow_sigmas", false);
        dpm.put("final_sigmas_type", "zero");
        dpm.put("variance_type", null);
        dpm.put("timestep_spacing", "linspace");
        dpm.put("use_dynamic_shifting", false);
        DEFAULTS.put("dpm", dpm);

        Map<String, Object> euler = new LinkedHashMap<>(common);
        euler.put("interpolation_type", "linear");
        euler.put("use_karras_sigmas", false);
        euler.put("use_exponential_sigmas", false);
        euler.put("use_beta_sigmas", false);
        euler.put("timestep_spacing", "linspace");
        euler.put("timestep_type", "discrete");
        euler.put("final_sigmas_type", "zero");
        DEFAULTS.put("euler", euler);

        Map<String, Object> ddim = new LinkedHashMap<>(common);
        ddim.put("clip_sample", true);
        ddim.put("set_alpha_to_one", true);
        ddim.put("thresholding", false);
        ddim.put("clip_sample_range", 1.0);
        ddim.put("timestep_spacing", "leading");
        DEFAULTS.put("ddim", ddim);

        Map<String, Object> lcm = new LinkedHashMap<>(common);
        lcm.put("beta_start", 0.00085);
        lcm.put("beta_end", 0.012);
        lcm.put("beta_schedule", "scaled_linear");
        lcm.put("original_inference_steps", 50);
        lcm.put("clip_sample", false);
        lcm.put("clip_sample_range", 1.0);
        lcm.put("set_alpha_to_one", true);
        lcm.put("thresholding", false);
        lcm.put("timestep_spacing", "leading");
        lcm.put("timestep_scaling", 10.0);
        DEFAULTS.put("lcm", lcm);
    }

    public final String scheduler;
    private final Map<String, Object> values;

    private SchedulerConfig(String scheduler, Map<String, Object> values) {
        this.scheduler = scheduler;
        this.values = values;
    }

    /** Resolves {@code raw} for scheduler {@code name} (dpm, euler, ddim, lcm). */
    public static SchedulerConfig resolve(String name, JSONObject raw, String timestepSpacingOverride) {
        Map<String, Object> defaults = DEFAULTS.get(name);
        if (defaults == null) {
            throw new MobileSdException("unknown scheduler '" + name + "'", "use one of dpm, euler, ddim, lcm");
        }
        Map<String, Object> values = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : defaults.entrySet()) {
            Object v = raw.has(e.getKey()) ? raw.opt(e.getKey()) : e.getValue();
            values.put(e.getKey(), v == JSONObject.NULL ? null : v);
        }
        if (raw.has("lambda_min_clipped") && "dpm".equals(name)) {
            throw unsupported(name, "lambda_min_clipped", raw.opt("lambda_min_clipped"));
        }
        if (timestepSpacingOverride != null && values.containsKey("timestep_spacing")) {
            values.put("timestep_spacing", timestepSpacingOverride);
        }
        return new SchedulerConfig(name, values);
    }

    /** The keys this client uses, resolved (the tests compare them with diffusers' own resolved configs). */
    public Map<String, Object> resolved() {
        return new LinkedHashMap<>(values);
    }

    static MobileSdException unsupported(String scheduler, String key, Object value) {
        return new MobileSdException("the bundle's scheduler config sets " + key + " = " + value + ", which this app's "
                + scheduler + " scheduler does not implement", "use another scheduler (--scheduler), or a bundle with the "
                + "standard SD scheduler config");
    }

    private Object raw(String key) {
        if (!values.containsKey(key)) {
            throw new IllegalArgumentException(scheduler + " config has no key " + key);
        }
        return values.get(key);
    }

    public int integer(String key) {
        Object v = raw(key);
        if (!(v instanceof Number)) {
            throw new MobileSdException("scheduler config: " + key + " is " + v + ", not a number", "re-export the bundle");
        }
        return ((Number) v).intValue();
    }

    public double number(String key) {
        Object v = raw(key);
        if (!(v instanceof Number)) {
            throw new MobileSdException("scheduler config: " + key + " is " + v + ", not a number", "re-export the bundle");
        }
        return ((Number) v).doubleValue();
    }

    public boolean flag(String key) {
        Object v = raw(key);
        if (!(v instanceof Boolean)) {
            throw new MobileSdException("scheduler config: " + key + " is " + v + ", not true/false", "re-export the bundle");
        }
        return (Boolean) v;
    }

    public String string(String key) {
        Object v = raw(key);
        return v == null ? null : v.toString();
    }

    public boolean isNull(String key) {
        return raw(key) == null;
    }

    /** {@code trained_betas} as doubles, or null. */
    public double[] trainedBetas() {
        Object v = raw("trained_betas");
        if (v == null) {
            return null;
        }
        if (!(v instanceof JSONArray)) {
            throw new MobileSdException("scheduler config: trained_betas is not a list", "re-export the bundle");
        }
        JSONArray a = (JSONArray) v;
        double[] out = new double[a.length()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.optDouble(i);
        }
        return out;
    }

    /** Refuses a boolean option this client does not implement when it is switched on. */
    void requireOff(String... keys) {
        for (String k : keys) {
            if (flag(k)) {
                throw unsupported(scheduler, k, true);
            }
        }
    }

    /** Refuses a string option other than the one value this client implements. */
    void requireValue(String key, String expected) {
        String v = string(key);
        if (!expected.equals(v)) {
            throw unsupported(scheduler, key, v);
        }
    }

    /** epsilon or v_prediction (the two an SD bundle can have). */
    PredictionType predictionType() {
        String p = string("prediction_type");
        if ("epsilon".equals(p)) {
            return PredictionType.EPSILON;
        }
        if ("v_prediction".equals(p)) {
            return PredictionType.V_PREDICTION;
        }
        throw unsupported(scheduler, "prediction_type", p);
    }
}
