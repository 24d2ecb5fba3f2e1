package dev.mobilesd.benchmark;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.pipeline.GeneratedImage;
import dev.mobilesd.pipeline.GenerationConfig;
import dev.mobilesd.pipeline.StableDiffusionPipeline;
import dev.mobilesd.pipeline.StageListener;
import java.util.ArrayList;
import java.util.List;

/**
 * The benchmark protocol of docs/latency-report.md: {@code warmup} untimed generations (GPU delegates compile
 * shaders on the first call), then {@code repeats} timed ones, every stage sample kept.
 */
public final class BenchmarkProtocol {
    private BenchmarkProtocol() {
    }

    /** What a benchmark measured: one recorder per timed run, the load time, and the last image. */
    public static final class Result {
        public final List<StageRecorder> runs;
        public final List<Double> loadSamples;
        public final int steps;
        public final int warmup;
        public final GeneratedImage image;

        Result(List<StageRecorder> runs, List<Double> loadSamples, int steps, int warmup, GeneratedImage image) {
            this.runs = runs;
            this.loadSamples = loadSamples;
            this.steps = steps;
            this.warmup = warmup;
            this.image = image;
        }
    }

    /**
     * Runs the protocol. {@code initialLoadSeconds} is the time the graphs took to open before the first run
     * (KEEP_LOADED); in LOW_MEMORY mode each run reports its own load time instead.
     */
    public static Result run(StableDiffusionPipeline pipeline, GenerationConfig config, int warmup, int repeats,
                             double initialLoadSeconds, StageListener progress) {
        if (warmup < 0 || repeats < 1) {
            throw new MobileSdException("--warmup " + warmup + " / --repeats " + repeats + " are out of range",
                    "use --warmup >= 0 and --repeats >= 1");
        }
        List<StageRecorder> runs = new ArrayList<>();
        List<Double> loads = new ArrayList<>();
        if (initialLoadSeconds > 0) {
            loads.add(initialLoadSeconds);
        }
        GeneratedImage image = null;
        for (int k = 0; k < warmup + repeats; k++) {
            StageRecorder rec = new StageRecorder();
            StageListener both = new StageListener() {
                @Override
                public void onStage(String name, double seconds) {
                    rec.onStage(name, seconds);
                    progress.onStage(name, seconds);
                }

                @Override
                public void onStep(int index, int total) {
                    progress.onStep(index, total);
                }
            };
            image = pipeline.generate(config, both);
            if (k >= warmup) {
                runs.add(rec);
                if (rec.stages.containsKey("load")) {
                    loads.addAll(rec.stages.get("load"));
                }
            }
        }
        return new Result(runs, loads, config.steps, warmup, image);
    }
}
