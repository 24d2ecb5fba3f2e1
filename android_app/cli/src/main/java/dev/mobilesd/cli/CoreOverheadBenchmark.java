package dev.mobilesd.cli;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.benchmark.SampleTimer;
import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.json.Json;
import dev.mobilesd.pipeline.GenerationConfig;
import dev.mobilesd.pipeline.ProcStatusMemoryProbe;
import dev.mobilesd.pipeline.ResourceManager;
import dev.mobilesd.pipeline.StableDiffusionPipeline;
import dev.mobilesd.pipeline.StageListener;
import java.nio.file.Paths;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * The core's own time per denoising step, outside graph calls: the real generation loop (scheduler, CFG,
 * batch concat / split, chunk dictionary and aliases, timing) over graph runners that compute nothing and
 * return preallocated outputs of the bundle's shapes. benchmarks/android_core_overhead.py gives it a bundle with
 * SD1.5's shapes (1x4x64x64 latent, the real 3-chunk tensors) and compares the result with an SD1.5 UNet step.
 *
 * <p>Three passes: the loop alone; with the copies the LiteRT runner makes around LiteRtRunCompiledModel (Java
 * tensors into native buffers, the last chunk's output out; chunk-to-chunk tensors stay in their buffers),
 * reported separately as "copies"; and with every chunk tensor copied through Java (no chunk chaining).
 */
public final class CoreOverheadBenchmark {
    private CoreOverheadBenchmark() {
    }

    public static void main(String[] args) {
        try {
            measure(args);
        } catch (MobileSdException e) {
            System.err.println("core overhead benchmark: error: " + e.getMessage());
            System.exit(2);
        }
    }

    private static void measure(String[] args) {
        CliArguments a = new CliArguments(args);
        int steps = a.integer("--steps", 20);
        int warmup = a.integer("--warmup", 2);
        int repeats = a.integer("--repeats", 5);
        Bundle bundle = Bundle.open(Paths.get(a.get("--bundle")));
        GenerationConfig config = new GenerationConfig(a.get("--prompt"), null, steps, a.number("--guidance", 7.5),
                a.longValue("--seed", 0), a.get("--scheduler", "dpm"));
        JSONObject out = new JSONObject();
        Json.put(out, "steps", steps);
        Json.put(out, "warmup", warmup);
        Json.put(out, "repeats", repeats);
        Json.put(out, "scheduler", config.scheduler);
        Json.put(out, "jvm", System.getProperty("java.vm.name") + " " + System.getProperty("java.version"));
        String[] names = {"loop_only", "loop_and_copies", "without_chunk_chaining"};
        PreallocatedRunnerFactory.Copies[] modes = PreallocatedRunnerFactory.Copies.values();
        for (int m = 0; m < modes.length; m++) {
            PreallocatedRunnerFactory factory = new PreallocatedRunnerFactory(modes[m]);
            SampleTimer step = new SampleTimer();
            SampleTimer copy = new SampleTimer();
            SampleTimer core = new SampleTimer();
            try (StableDiffusionPipeline p = new StableDiffusionPipeline(bundle, factory,
                    new ResourceManager(ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe()))) {
                p.loadResources();
                for (int run = 0; run < warmup + repeats; run++) {
                    boolean timed = run >= warmup;
                    long[] before = {factory.runnerNanos()};
                    p.generate(config, new StageListener() {
                        @Override
                        public void onStage(String name, double seconds) {
                            if ("unet_step".equals(name)) {
                                double inRunner = (factory.runnerNanos() - before[0]) / 1e9;
                                before[0] = factory.runnerNanos();
                                if (timed) {
                                    step.add(seconds);
                                    copy.add(inRunner);
                                    core.add(seconds - inRunner);
                                }
                            } else if ("text_encoder".equals(name)) {
                                before[0] = factory.runnerNanos();
                            }
                        }
                    });
                }
            }
            JSONObject pass = new JSONObject();
            Json.put(pass, "step", step.toStageJson(steps));
            Json.put(pass, "core", core.toStageJson(steps));
            Json.put(pass, "copies", copy.toStageJson(steps));
            Json.put(out, names[m], pass);
        }
        JSONArray chunks = new JSONArray();
        for (String c : bundle.manifest.unetChunks) {
            chunks.put(c);
        }
        Json.put(out, "chunks", chunks);
        Json.writeAtomically(Paths.get(a.get("--out")), out);
        System.out.println("wrote " + a.get("--out"));
    }
}
