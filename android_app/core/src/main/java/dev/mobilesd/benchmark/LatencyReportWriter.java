package dev.mobilesd.benchmark;

import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.bundle.Manifest;
import dev.mobilesd.json.Json;
import dev.mobilesd.pipeline.GenerationConfig;
import dev.mobilesd.pipeline.MemoryProbe;
import dev.mobilesd.pipeline.ResourceManager;
import dev.mobilesd.pipeline.StableDiffusionPipeline;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * Writes a benchmark as a latency report (mobilesd/latency/latency_report.schema.json, docs/latency-report.md),
 * so {@code mobilesd report} can show an app run next to host benchmarks and estimates.
 */
public final class LatencyReportWriter {
    public static final String SCHEMA_VERSION = "1.0";
    public static final double TARGET_SECONDS = 7.0;

    private LatencyReportWriter() {
    }

    public static JSONObject build(BenchmarkProtocol.Result result, StableDiffusionPipeline pipeline, GenerationConfig config,
                                   DeviceInfo device, String runtimeVersion, int repeatsAsked) {
        Bundle bundle = pipeline.bundle;
        Manifest m = bundle.manifest;
        boolean gpu = pipeline.factory.accelerator() == dev.mobilesd.runtime.Accelerator.GPU;
        JSONObject r = new JSONObject();
        Json.put(r, "schema_version", SCHEMA_VERSION);
        Json.put(r, "kind", "measurement");
        Json.put(r, "created", Instant.now().truncatedTo(ChronoUnit.SECONDS).toString());
        String label = device.name + " / tflite-" + (gpu ? "gpu" : "cpu") + " (app)";
        Json.put(r, "label", label.length() > 80 ? label.substring(0, 80) : label);

        JSONObject by = new JSONObject();
        Json.put(by, "kind", "app");
        Json.put(by, "tool", device.tool);
        Json.put(r, "measured_by", by);

        JSONObject dev = new JSONObject();
        Json.put(dev, "name", device.name);
        if (device.model != null) {
            Json.put(dev, "model", device.model);
        }
        Json.put(dev, "os", device.os);
        if (device.soc != null) {
            Json.put(dev, "soc", device.soc);
        }
        Json.put(dev, "accelerator", pipeline.factory.accelerator().reportName);
        if (device.acceleratorName != null) {
            Json.put(dev, "accelerator_name", device.acceleratorName);
        }
        if (device.cpuThreads > 0) {
            Json.put(dev, "cpu_threads", device.cpuThreads);
        }
        if (device.deviceKey != null) {
            Json.put(dev, "device_key", device.deviceKey);
        }
        Json.put(r, "device", dev);

        JSONObject rt = new JSONObject();
        Json.put(rt, "name", "tflite");
        Json.put(rt, "version", runtimeVersion);
        Json.put(rt, "delegate", gpu ? "gpu" : "xnnpack");
        Json.put(rt, "precision", m.precision);
        Json.put(r, "runtime", rt);

        JSONObject b = new JSONObject();
        Json.put(b, "id", m.bundleId);
        Json.put(b, "manifest_sha256", bundle.manifestSha256);
        String model = m.sourceModel.replace('\\', '/');
        model = model.substring(model.lastIndexOf('/') + 1);
        if (!model.isEmpty()) {
            Json.put(b, "model", model);
        }
        Json.put(r, "bundle", b);

        JSONObject s = new JSONObject();
        Json.put(s, "width", m.imageWidth);
        Json.put(s, "height", m.imageHeight);
        Json.put(s, "steps", config.steps);
        Json.put(s, "guidance", pipeline.guidance(config));
        Json.put(s, "scheduler", pipeline.schedulerName(config));
        boolean cfg = pipeline.usesGuidance(config);
        Json.put(s, "cfg_mode", !cfg ? "none" : (m.cfg.unetBatch == 2 ? "batch" : "sequential"));
        Json.put(s, "batch_size", 1);
        Json.put(s, "seed", config.seed);
        Json.put(s, "prompt", config.prompt);
        Json.put(r, "settings", s);

        JSONObject p = new JSONObject();
        Json.put(p, "warmup", result.warmup);
        Json.put(p, "repeats", repeatsAsked);
        Json.put(p, "clock", "System.nanoTime");
        Json.put(r, "protocol", p);

        Json.put(r, "stages", stages(result));
        Json.put(r, "steps", timeline(result));

        MemoryProbe probe = pipeline.resources.probe();
        JSONObject mem = new JSONObject();
        long peak = probe.peakBytes();
        Json.put(mem, "peak_rss_bytes", peak >= 0 ? (Object) peak : JSONObject.NULL);
        Json.put(mem, "peak_accelerator_bytes", JSONObject.NULL);
        Json.put(mem, "note", probe.description() + "; resource policy "
                + pipeline.resources.policy.name().toLowerCase(java.util.Locale.ROOT).replace('_', '-'));
        Json.put(r, "memory", mem);
        Json.put(r, "target_s", TARGET_SECONDS);
        String notes = device.note + (pipeline.resources.policy == ResourceManager.Policy.LOW_MEMORY
                ? " Low-memory mode: every stage's graphs were opened before the stage and closed after it; 'load' is "
                + "the time spent opening them per run, not included in end_to_end." : "")
                + String.format(java.util.Locale.ROOT, " Bundle checksums verified in %.3f s before loading.",
                bundle.verifySeconds);
        Json.put(r, "notes", notes.trim());
        return r;
    }

    static JSONObject stages(BenchmarkProtocol.Result result) {
        JSONObject stages = new JSONObject();
        if (!result.loadSamples.isEmpty()) {
            SampleTimer load = new SampleTimer();
            for (double x : result.loadSamples) {
                load.add(x);
            }
            Json.put(stages, "load", load.toStageJson(1));
        }
        for (String name : new String[] {"text_encoder", "vae_decoder", "end_to_end"}) {
            SampleTimer t = new SampleTimer();
            for (StageRecorder run : result.runs) {
                List<Double> xs = run.stages.get(name);
                if (xs != null) {
                    for (double x : xs) {
                        t.add(x);
                    }
                }
            }
            if (t.count() > 0) {
                Json.put(stages, name, t.toStageJson(0));
            }
        }
        SampleTimer step = new SampleTimer();
        int chunks = 0;
        for (StageRecorder run : result.runs) {
            if (run.steps.size() != result.steps) {
                throw new IllegalStateException("a run reported " + run.steps.size() + " steps for " + result.steps);
            }
            for (double x : run.steps) {
                step.add(x);
            }
            for (Map<Integer, Double> c : run.stepChunks) {
                for (int i : c.keySet()) {
                    chunks = Math.max(chunks, i + 1);
                }
            }
        }
        Json.put(stages, "unet_step", step.toStageJson(result.steps));
        for (int i = 0; i < chunks; i++) {
            SampleTimer t = new SampleTimer();
            for (StageRecorder run : result.runs) {
                for (Map<Integer, Double> c : run.stepChunks) {
                    t.add(c.getOrDefault(i, 0.0));
                }
            }
            Json.put(stages, "unet_chunk_" + i, t.toStageJson(result.steps));
        }
        return stages;
    }

    static JSONArray timeline(BenchmarkProtocol.Result result) {
        JSONArray steps = new JSONArray();
        int chunks = 0;
        for (StageRecorder run : result.runs) {
            for (Map<Integer, Double> c : run.stepChunks) {
                for (int i : c.keySet()) {
                    chunks = Math.max(chunks, i + 1);
                }
            }
        }
        for (int k = 0; k < result.steps; k++) {
            List<Double> xs = new ArrayList<>();
            for (StageRecorder run : result.runs) {
                xs.add(run.steps.get(k));
            }
            JSONObject e = new JSONObject();
            Json.put(e, "index", k);
            Json.put(e, "seconds", SampleTimer.median(xs));
            if (chunks > 0) {
                JSONArray cs = new JSONArray();
                for (int i = 0; i < chunks; i++) {
                    List<Double> ys = new ArrayList<>();
                    for (StageRecorder run : result.runs) {
                        ys.add(run.stepChunks.get(k).getOrDefault(i, 0.0));
                    }
                    cs.put((Object) SampleTimer.median(ys));
                }
                Json.put(e, "chunks_s", cs);
            }
            steps.put(e);
        }
        return steps;
    }
}
