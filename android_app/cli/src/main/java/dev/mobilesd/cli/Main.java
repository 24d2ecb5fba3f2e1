package dev.mobilesd.cli;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.benchmark.BenchmarkProtocol;
import dev.mobilesd.benchmark.DeviceInfo;
import dev.mobilesd.benchmark.LatencyReportWriter;
import dev.mobilesd.benchmark.StageRecorder;
import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.json.Json;
import dev.mobilesd.litert.LiteRtRunnerFactory;
import dev.mobilesd.pipeline.GeneratedImage;
import dev.mobilesd.pipeline.GenerationConfig;
import dev.mobilesd.pipeline.ProcStatusMemoryProbe;
import dev.mobilesd.pipeline.ResourceManager;
import dev.mobilesd.pipeline.StableDiffusionPipeline;
import dev.mobilesd.pipeline.StageListener;
import dev.mobilesd.runtime.Accelerator;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Locale;
import org.json.JSONObject;

/**
 * The app core's command line on a desktop JVM: the same code path as the Android app (bundle check,
 * tokenizer, schedulers, CFG loop, chunk chaining, LiteRT through its C API, benchmark protocol, report
 * writer), minus the screen. {@code mobilesd app android} builds the jar and runs this.
 */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static int run(String[] args) {
        Path result = null;
        NativeOutputCapture capture = null;
        boolean tempLog = false;
        boolean ok = false;
        try {
            CliArguments a = new CliArguments(args);
            result = a.get("--result") != null ? Paths.get(a.get("--result")) : null;
            Path logPath;
            if (a.get("--native-log") != null) {
                logPath = Paths.get(a.get("--native-log"));
            } else {
                logPath = Files.createTempFile("mobilesd-android-native-", ".log");
                tempLog = true;
            }
            capture = NativeOutputCapture.start(logPath);
            JSONObject summary = generate(a, capture);
            summary = Json.put(summary, "ok", true);
            if (capture != null && !tempLog) {
                Json.put(summary, "native_log", capture.path().toString());
            }
            if (result != null) {
                Json.writeAtomically(result, summary);
            }
            ok = true;
            return 0;
        } catch (MobileSdException e) {
            System.err.println("mobilesd-android: error: " + e.problem());
            if (e.fix() != null) {
                System.err.println("  fix: " + e.fix());
            }
            writeFailure(result, e.problem(), e.fix(), capture);
            return 2;
        } catch (IOException | RuntimeException | LinkageError e) {
            StringWriter trace = new StringWriter();
            e.printStackTrace(new PrintWriter(trace));
            System.err.println("mobilesd-android: internal error: " + trace);
            if (capture != null) {
                String log = capture.text();
                System.err.println("native log (last lines):\n" + log.substring(Math.max(0, log.length() - 3000)));
            }
            writeFailure(result, "internal error: " + e, null, capture);
            return 1;
        } finally {
            if (capture != null) {
                boolean empty = capture.text().isEmpty();
                capture.close();
                if (tempLog && (ok || empty)) {
                    try {
                        Files.deleteIfExists(capture.path());
                    } catch (IOException ignored) {
                        // a leftover temp log is harmless
                    }
                }
            }
        }
    }

    private static void writeFailure(Path result, String problem, String fix, NativeOutputCapture capture) {
        boolean logged = capture != null && !capture.text().isEmpty();   // LiteRT said something: point to it
        if (logged) {
            System.err.println("  runtime log: " + capture.path());
        }
        if (result == null) {
            return;
        }
        JSONObject r = new JSONObject();
        Json.put(r, "ok", false);
        Json.put(r, "problem", problem);
        Json.put(r, "fix", fix != null ? fix : JSONObject.NULL);
        Json.put(r, "native_log", logged ? capture.path().toString() : JSONObject.NULL);
        Json.writeAtomically(result, r);
    }

    private static JSONObject generate(CliArguments a, NativeOutputCapture capture) {
        Accelerator accelerator = Accelerator.parse(a.get("--accelerator", "gpu"));
        String lib = a.get("--litert-lib", System.getProperty("mobilesd.litert.lib"));
        if (lib == null) {
            throw new MobileSdException("no LiteRT library given", "pass --litert-lib PATH/libLiteRt.so (the ai-edge-litert "
                    + "wheel has it; `mobilesd app android` finds it)");
        }
        String libDir = a.get("--litert-dir", Paths.get(lib).toAbsolutePath().getParent().toString());
        Path out = Paths.get(a.get("--out", "image.png"));
        Path reportPath = a.get("--report") != null ? Paths.get(a.get("--report")) : null;
        GenerationConfig config = new GenerationConfig(a.get("--prompt"), a.get("--negative-prompt"),
                a.integer("--steps", 20), a.number("--guidance", Double.NaN), a.longValue("--seed", 0),
                a.get("--scheduler"));
        boolean quiet = a.flag("--quiet");

        Bundle bundle = Bundle.open(Paths.get(a.get("--bundle")));   // every checksum, before any graph is opened
        ResourceManager resources = new ResourceManager(a.flag("--low-memory") ? ResourceManager.Policy.LOW_MEMORY
                : ResourceManager.Policy.KEEP_LOADED, new ProcStatusMemoryProbe());
        try (LiteRtRunnerFactory factory = new LiteRtRunnerFactory(lib, libDir, accelerator, a.flag("--allow-cpu-fallback"));
             StableDiffusionPipeline pipeline = new StableDiffusionPipeline(bundle, factory, resources)) {
            String scheduler = pipeline.schedulerName(config);   // refuse an unsupported scheduler before loading
            double load = pipeline.loadResources();
            JSONObject summary = new JSONObject();
            GeneratedImage image;
            StageRecorder single = null;
            BenchmarkProtocol.Result bench = null;
            StageListener progress = quiet ? StageListener.NONE : new StageListener() {
                @Override
                public void onStage(String name, double seconds) {
                    if ("end_to_end".equals(name)) {
                        System.out.printf(Locale.ROOT, "generated in %.3f s%n", seconds);
                    }
                }
            };
            if (reportPath != null) {
                bench = BenchmarkProtocol.run(pipeline, config, a.integer("--warmup", 1), a.integer("--repeats", 3), load,
                        progress);
                image = bench.image;
            } else {
                single = new StageRecorder();
                StageRecorder rec = single;
                image = pipeline.generate(config, new StageListener() {
                    @Override
                    public void onStage(String name, double seconds) {
                        rec.onStage(name, seconds);
                        progress.onStage(name, seconds);
                    }
                });
            }
            String adapter = accelerator == Accelerator.GPU && capture != null ? DesktopDevice.adapterFromLog(capture.text()) : null;
            DeviceInfo device = DesktopDevice.describe(accelerator, adapter);
            String runtimeVersion = a.get("--runtime-version", "LiteRT C API") + " via JNA";
            PngWriter.write(image, out);
            if (bench != null) {
                Json.writeAtomically(reportPath, LatencyReportWriter.build(bench, pipeline, config, device, runtimeVersion,
                        a.integer("--repeats", 3)));
            }
            Json.put(summary, "image", out.toAbsolutePath().toString());
            Json.put(summary, "width", image.width);
            Json.put(summary, "height", image.height);
            Json.put(summary, "scheduler", scheduler);
            Json.put(summary, "steps", config.steps);
            Json.put(summary, "accelerator", accelerator.reportName);
            Json.put(summary, "adapter", adapter != null ? adapter : JSONObject.NULL);
            Json.put(summary, "load_seconds", load);
            Json.put(summary, "verify_seconds", bundle.verifySeconds);
            Json.put(summary, "report", reportPath != null ? reportPath.toAbsolutePath().toString() : JSONObject.NULL);
            if (single != null) {
                JSONObject stages = new JSONObject();
                for (String name : new String[] {"text_encoder", "vae_decoder", "end_to_end"}) {
                    Json.put(stages, name, single.stage(name));
                }
                Json.put(summary, "stages", stages);
                Json.put(summary, "step_seconds", new org.json.JSONArray(single.stepSeconds()));
            }
            if (!quiet) {
                System.out.printf(Locale.ROOT, "wrote %s (%dx%d, %s%s, %d %s steps, seed %d)%s%n", out, image.width,
                        image.height, accelerator.reportName, adapter != null ? " on " + adapter : "", config.steps,
                        scheduler, config.seed, reportPath != null ? " and " + reportPath : "");
            }
            return summary;
        }
    }
}
