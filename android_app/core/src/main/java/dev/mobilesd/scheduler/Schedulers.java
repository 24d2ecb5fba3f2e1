package dev.mobilesd.scheduler;

import dev.mobilesd.MobileSdException;
import java.util.Arrays;
import java.util.List;
import org.json.JSONObject;

/** Makes a scheduler by its bundle name (manifest {@code scheduler.supported}): dpm, euler, ddim, lcm. */
public final class Schedulers {
    public static final List<String> NAMES = Arrays.asList("dpm", "euler", "ddim", "lcm");

    private Schedulers() {
    }

    public static Scheduler create(String name, JSONObject rawConfig, String timestepSpacingOverride, int steps) {
        SchedulerConfig c = SchedulerConfig.resolve(name, rawConfig, timestepSpacingOverride);
        switch (name) {
            case "dpm":
                return new DPMSolverMultistepScheduler(c, steps);
            case "euler":
                return new EulerDiscreteScheduler(c, steps);
            case "ddim":
                return new DDIMScheduler(c, steps);
            case "lcm":
                return new LCMScheduler(c, steps);
            default:
                throw new MobileSdException("unknown scheduler '" + name + "'", "use one of " + NAMES);
        }
    }
}
