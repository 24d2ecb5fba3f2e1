package dev.mobilesd.app;

import android.app.Activity;
import android.app.ActivityManager;
import android.content.ComponentCallbacks2;
import android.content.Intent;
import android.graphics.Bitmap;
import android.net.Uri;
import android.os.Bundle;
import android.os.Handler;
import android.os.Looper;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.EditText;
import android.widget.ImageView;
import android.widget.RadioGroup;
import android.widget.Spinner;
import android.widget.TableLayout;
import android.widget.TableRow;
import android.widget.TextView;
import androidx.core.content.FileProvider;
import dev.mobilesd.MobileSdException;
import dev.mobilesd.benchmark.BenchmarkProtocol;
import dev.mobilesd.benchmark.LatencyReportWriter;
import dev.mobilesd.benchmark.StageRecorder;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.json.Json;
import dev.mobilesd.litert.LiteRtRunnerFactory;
import dev.mobilesd.pipeline.GeneratedImage;
import dev.mobilesd.pipeline.GenerationConfig;
import dev.mobilesd.pipeline.ProcStatusMemoryProbe;
import dev.mobilesd.pipeline.ResourceManager;
import dev.mobilesd.pipeline.StableDiffusionPipeline;
import dev.mobilesd.pipeline.StageListener;
import dev.mobilesd.runtime.Accelerator;
import dev.mobilesd.scheduler.Schedulers;
import java.io.File;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.json.JSONObject;

/**
 * The app's one screen: prompt, negative prompt, steps, guidance, seed, scheduler, accelerator, Generate,
 * the image, per-stage timings, and Benchmark (the latency-report protocol, written to app storage and
 * shared). Everything but the widgets is the core (android_app/core) and the LiteRT binding (android_app/litert),
 * the code the desktop tests run.
 */
public final class MainActivity extends Activity {
    private static final int PICK_BUNDLE = 1;
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final Handler ui = new Handler(Looper.getMainLooper());
    private File bundlesDir;
    private File bundleDir;
    private StableDiffusionPipeline pipeline;
    private LiteRtRunnerFactory factory;
    private String pipelineKey;
    private volatile boolean busy;

    private TextView status;
    private TextView progress;
    private EditText prompt;
    private EditText negative;
    private EditText steps;
    private EditText guidance;
    private EditText seed;
    private Spinner scheduler;
    private RadioGroup accelerator;
    private ImageView image;
    private TableLayout timings;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        setContentView(R.layout.activity_main);
        status = findViewById(R.id.bundle_status);
        progress = findViewById(R.id.progress);
        prompt = findViewById(R.id.prompt);
        negative = findViewById(R.id.negative_prompt);
        steps = findViewById(R.id.steps);
        guidance = findViewById(R.id.guidance);
        seed = findViewById(R.id.seed);
        scheduler = findViewById(R.id.scheduler);
        accelerator = findViewById(R.id.accelerator);
        image = findViewById(R.id.image);
        timings = findViewById(R.id.timings);
        scheduler.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_dropdown_item, Schedulers.NAMES));
        bundlesDir = new File(getExternalFilesDir(null), "bundles");
        bundlesDir.mkdirs();
        findBundle();
        Button pick = findViewById(R.id.pick_bundle);
        pick.setOnClickListener(v -> startActivityForResult(new Intent(Intent.ACTION_OPEN_DOCUMENT_TREE), PICK_BUNDLE));
        ((Button) findViewById(R.id.generate)).setOnClickListener(v -> start(false));
        ((Button) findViewById(R.id.benchmark)).setOnClickListener(v -> start(true));
    }

    /** The bundle to use: bundles/default if present, else the first bundle folder under bundles/. */
    private void findBundle() {
        File preferred = new File(bundlesDir, "default");
        bundleDir = new File(preferred, "manifest.json").isFile() ? preferred : null;
        File[] all = bundlesDir.listFiles();
        if (bundleDir == null && all != null) {
            for (File f : all) {
                if (new File(f, "manifest.json").isFile()) {
                    bundleDir = f;
                    break;
                }
            }
        }
        status.setText(bundleDir != null ? "bundle: " + bundleDir : getString(R.string.no_bundle, bundlesDir.getPath()));
    }

    @Override
    protected void onActivityResult(int request, int result, Intent data) {
        super.onActivityResult(request, result, data);
        if (request != PICK_BUNDLE || result != RESULT_OK || data == null) {
            return;
        }
        Uri tree = data.getData();
        status.setText("importing " + tree + " ...");
        worker.execute(() -> {
            try {
                File dir = BundleImporter.importTree(this, tree, bundlesDir);
                ui.post(() -> {
                    bundleDir = dir;
                    status.setText("bundle: " + dir);
                });
            } catch (Exception e) {
                ui.post(() -> status.setText("import failed: " + e.getMessage()));
            }
        });
    }

    private GenerationConfig config() {
        return new GenerationConfig(prompt.getText().toString(), negative.getText().toString(),
                Integer.parseInt(steps.getText().toString().trim()), Double.parseDouble(guidance.getText().toString().trim()),
                Long.parseLong(seed.getText().toString().trim()), (String) scheduler.getSelectedItem());
    }

    private Accelerator selectedAccelerator() {
        return accelerator.getCheckedRadioButtonId() == R.id.accelerator_cpu ? Accelerator.CPU : Accelerator.GPU;
    }

    /** LOW_MEMORY when the system says memory is low or free memory would not hold twice the bundle's graphs. */
    private ResourceManager.Policy memoryPolicy(dev.mobilesd.bundle.Bundle bundle) {
        long graphs = 0;
        for (GraphSpec g : bundle.manifest.graphs.values()) {
            graphs += g.sizeBytes;
        }
        ActivityManager.MemoryInfo mi = new ActivityManager.MemoryInfo();
        ((ActivityManager) getSystemService(ACTIVITY_SERVICE)).getMemoryInfo(mi);
        return mi.lowMemory || mi.availMem < 2 * graphs ? ResourceManager.Policy.LOW_MEMORY
                : ResourceManager.Policy.KEEP_LOADED;
    }

    /** The pipeline for the current bundle and accelerator, opened once and kept (closed when either changes). */
    private StableDiffusionPipeline pipeline(Accelerator acc) {
        String key = bundleDir + "|" + acc;
        if (pipeline != null && key.equals(pipelineKey)) {
            return pipeline;
        }
        closePipeline();
        dev.mobilesd.bundle.Bundle bundle = dev.mobilesd.bundle.Bundle.open(bundleDir.toPath());   // checksums first
        factory = new LiteRtRunnerFactory("LiteRt", getApplicationInfo().nativeLibraryDir, acc, false);
        pipeline = new StableDiffusionPipeline(bundle, factory, new ResourceManager(memoryPolicy(bundle),
                new ProcStatusMemoryProbe()));
        pipelineKey = key;
        return pipeline;
    }

    private void closePipeline() {
        if (pipeline != null) {
            pipeline.close();
            pipeline = null;
        }
        if (factory != null) {
            factory.close();
            factory = null;
        }
        pipelineKey = null;
    }

    private void start(boolean benchmark) {
        if (busy || bundleDir == null) {
            return;
        }
        busy = true;
        GenerationConfig cfg;
        try {
            cfg = config();
        } catch (NumberFormatException e) {
            progress.setText("steps, guidance and seed must be numbers");
            busy = false;
            return;
        }
        Accelerator acc = selectedAccelerator();
        StageListener onStep = new StageListener() {
            @Override
            public void onStage(String name, double seconds) {
            }

            @Override
            public void onStep(int index, int total) {
                ui.post(() -> progress.setText("step " + (index + 1) + " / " + total));
            }
        };
        worker.execute(() -> {
            try {
                StableDiffusionPipeline p = pipeline(acc);
                double load = p.loadResources();
                StageRecorder rec = new StageRecorder();
                GeneratedImage img;
                File report = null;
                if (benchmark) {
                    BenchmarkProtocol.Result r = BenchmarkProtocol.run(p, cfg, 1, 3, load, onStep);
                    img = r.image;
                    JSONObject json = LatencyReportWriter.build(r, p, cfg, AndroidDevice.describe(acc == Accelerator.GPU),
                            "LiteRT 2.3.0 C API via JNA", 3);
                    File dir = new File(getExternalFilesDir(null), "reports");
                    report = new File(dir, "report-" + System.currentTimeMillis() + ".json");
                    Json.writeAtomically(report.toPath(), json);
                    rec = r.runs.get(r.runs.size() - 1);
                } else {
                    StageRecorder single = rec;
                    img = p.generate(cfg, new StageListener() {
                        @Override
                        public void onStage(String name, double seconds) {
                            single.onStage(name, seconds);
                        }

                        @Override
                        public void onStep(int index, int total) {
                            onStep.onStep(index, total);
                        }
                    });
                }
                Bitmap bmp = Bitmap.createBitmap(img.argb(), img.width, img.height, Bitmap.Config.ARGB_8888);
                StageRecorder shown = rec;
                File shared = report;
                ui.post(() -> {
                    image.setImageBitmap(bmp);
                    showTimings(shown, load);
                    progress.setText(shared != null ? "report: " + shared : "done");
                    if (shared != null) {
                        share(shared);
                    }
                });
            } catch (MobileSdException e) {
                ui.post(() -> progress.setText(e.problem() + (e.fix() != null ? "\nfix: " + e.fix() : "")));
            } catch (RuntimeException e) {
                ui.post(() -> progress.setText("error: " + e));
            } finally {
                busy = false;
            }
        });
    }

    private void showTimings(StageRecorder rec, double load) {
        timings.removeAllViews();
        addRow("load", load);
        for (String name : new String[] {"text_encoder", "vae_decoder", "end_to_end"}) {
            addRow(name, rec.stage(name));
        }
        double sum = 0;
        for (double s : rec.stepSeconds()) {
            sum += s;
        }
        addRow("unet_step (mean)", rec.stepSeconds().isEmpty() ? Double.NaN : sum / rec.stepSeconds().size());
    }

    private void addRow(String name, double seconds) {
        TableRow row = new TableRow(this);
        TextView a = new TextView(this);
        a.setText(name);
        TextView b = new TextView(this);
        b.setText(Double.isNaN(seconds) ? "-" : String.format(Locale.ROOT, "%.3f s", seconds));
        row.addView(a);
        row.addView(b);
        timings.addView(row);
    }

    private void share(File report) {
        Uri uri = FileProvider.getUriForFile(this, "dev.mobilesd.app.files", report);
        Intent send = new Intent(Intent.ACTION_SEND).setType("application/json").putExtra(Intent.EXTRA_STREAM, uri)
                .addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION);
        startActivity(Intent.createChooser(send, "share latency report"));
    }

    @Override
    public void onTrimMemory(int level) {
        super.onTrimMemory(level);
        // the system is short of memory: drop every loaded graph (reloaded per stage on the next run)
        if (level >= ComponentCallbacks2.TRIM_MEMORY_RUNNING_LOW && !busy && pipeline != null) {
            worker.execute(() -> pipeline.resources.unloadAll());
        }
    }

    @Override
    protected void onDestroy() {
        worker.execute(this::closePipeline);
        worker.shutdown();
        super.onDestroy();
    }
}
