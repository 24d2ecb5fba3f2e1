package dev.mobilesd.pipeline;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.Bundle;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.bundle.Manifest;
import dev.mobilesd.json.Json;
import dev.mobilesd.random.TorchRandomSource;
import dev.mobilesd.runtime.GraphRunnerFactory;
import dev.mobilesd.runtime.Tensor;
import dev.mobilesd.scheduler.Scheduler;
import dev.mobilesd.scheduler.Schedulers;
import dev.mobilesd.tokenizer.BPETokenizer;
import java.util.ArrayList;
import java.util.List;
import org.json.JSONObject;

/**
 * The generation loop an app runs (docs/manifest.md, "The loop an app runs"; the reference is
 * {@code mobilesd/pipeline.py:HostPipeline.generate}): tokenize negative prompt and prompt, text encoder,
 * x = randn(seed) * init_noise_sigma, then per step scale_model_input, the UNet (one call on
 * [uncond, cond] for unet_batch 2, two calls for 1, one call on the prompt without CFG), guidance, scheduler
 * step; decoder; round(x * 255). Timings go to a {@link StageListener}.
 */
public final class StableDiffusionPipeline implements AutoCloseable {
    public final Bundle bundle;
    public final Manifest manifest;
    private final TextEncoder textEncoder;
    private final Unet unet;
    private final Decoder decoder;
    private final JSONObject schedulerConfig;
    public final ResourceManager resources;
    public final GraphRunnerFactory factory;

    public StableDiffusionPipeline(Bundle bundle, GraphRunnerFactory factory, ResourceManager resources) {
        this.bundle = bundle;
        this.manifest = bundle.manifest;
        this.factory = factory;
        this.resources = resources;
        Manifest.Tokenizer t = manifest.tokenizer;
        BPETokenizer tokenizer = BPETokenizer.fromFiles(bundle.path(t.vocab), bundle.path(t.merges), t.bosId, t.eosId,
                t.padId, t.maxLength, t.lowercase);
        textEncoder = new TextEncoder(tokenizer, resources.manage(managed(manifest.graph("text_encoder"))));
        List<ManagedGraph> chunks = new ArrayList<>();
        for (GraphSpec g : manifest.unetGraphs()) {
            chunks.add(resources.manage(managed(g)));
        }
        unet = new Unet(chunks, manifest.cfg.unetBatch);
        decoder = new Decoder(resources.manage(managed(manifest.graph("vae_decoder"))));
        schedulerConfig = Json.readObject(bundle.path(manifest.scheduler.config), "scheduler config");
    }

    private ManagedGraph managed(GraphSpec g) {
        return new ManagedGraph(g, bundle.path(g.file), factory);
    }

    public Unet unet() {
        return unet;
    }

    public TextEncoder textEncoder() {
        return textEncoder;
    }

    /** Opens every graph now (KEEP_LOADED); returns the seconds it took. LOW_MEMORY opens them per stage instead. */
    public double loadResources() {
        return resources.policy == ResourceManager.Policy.KEEP_LOADED ? resources.loadAll() : 0;
    }

    /** The scheduler this config asks for, refused unless the bundle lists it as supported. */
    public String schedulerName(GenerationConfig config) {
        String name = config.scheduler != null ? config.scheduler : manifest.scheduler.defaultName;
        if (!Schedulers.NAMES.contains(name)) {
            throw new MobileSdException("unknown scheduler '" + name + "'", "use one of " + Schedulers.NAMES);
        }
        if (!manifest.scheduler.supported.contains(name)) {
            throw new MobileSdException("this bundle does not support the " + name + " scheduler (it lists "
                    + manifest.scheduler.supported + ")", "use --scheduler " + manifest.scheduler.defaultName);
        }
        return name;
    }

    public double guidance(GenerationConfig config) {
        return Double.isNaN(config.guidance) ? manifest.cfg.defaultGuidance : config.guidance;
    }

    /** Whether this run applies classifier-free guidance (the host's rule: a CFG bundle and guidance above 1). */
    public boolean usesGuidance(GenerationConfig config) {
        return !"none".equals(manifest.cfg.mode) && guidance(config) > 1.0;
    }

    public GeneratedImage generate(GenerationConfig config, StageListener listener) {
        if (config.steps < 1) {
            throw new MobileSdException("steps must be at least 1 (got " + config.steps + ")", "pass --steps 20, for example");
        }
        String schedulerName = schedulerName(config);
        Scheduler scheduler = Schedulers.create(schedulerName, schedulerConfig, manifest.scheduler.timestepSpacing,
                config.steps);
        boolean cfg = usesGuidance(config);
        float guidance = (float) guidance(config);
        String negative = config.negativePrompt != null ? config.negativePrompt : manifest.cfg.negativePromptDefault;
        resources.takeLoadSeconds();
        long tStart = System.nanoTime();

        resources.acquire(textEncoder.graphs());
        long t0 = System.nanoTime();
        Tensor uncond = cfg ? textEncoder.encode(negative) : null;
        Tensor cond = textEncoder.encode(config.prompt);
        listener.onStage("text_encoder", seconds(t0));
        resources.release(textEncoder.graphs());

        TorchRandomSource random = new TorchRandomSource(config.seed);
        int[] latentShape = {1, manifest.latentChannels, manifest.latentHeight, manifest.latentWidth};
        float[] noise = random.normalArray(Tensor.elementCount(latentShape));
        float sigma = scheduler.initNoiseSigma();
        for (int i = 0; i < noise.length; i++) {
            noise[i] = noise[i] * sigma;
        }
        Tensor x = Tensor.ofFloats(latentShape, noise);
        Tensor context = null;
        if (unet.batch == 2) {
            context = cfg ? Tensor.concatBatch(uncond, cond) : Tensor.concatBatch(cond, cond);
        }

        resources.acquire(unet.graphs());
        float[] timesteps = scheduler.timesteps();
        for (int k = 0; k < timesteps.length; k++) {
            float t = timesteps[k];
            long ts = System.nanoTime();
            Tensor scaled = scheduler.scaleModelInput(x, t);
            Tensor prediction;
            if (cfg) {
                Tensor predUncond;
                Tensor predCond;
                if (unet.batch == 2) {
                    Tensor both = unet.predictNoise(Tensor.concatBatch(scaled, scaled), t, context, listener);
                    predUncond = both.batchItem(0);
                    predCond = both.batchItem(1);
                } else {
                    predUncond = unet.predictNoise(scaled, t, uncond, listener);
                    predCond = unet.predictNoise(scaled, t, cond, listener);
                }
                prediction = guide(predUncond, predCond, guidance);
            } else if (unet.batch == 2) {   // a batch-2 graph without CFG: the conditional half twice
                prediction = unet.predictNoise(Tensor.concatBatch(scaled, scaled), t, context, listener).batchItem(0);
            } else {
                prediction = unet.predictNoise(scaled, t, cond, listener);
            }
            x = scheduler.step(prediction, t, x, random);
            listener.onStage("unet_step", seconds(ts));
            listener.onStep(k, timesteps.length);
        }
        resources.release(unet.graphs());

        resources.acquire(decoder.graphs());
        long td = System.nanoTime();
        GeneratedImage image = decoder.decode(x);
        listener.onStage("vae_decoder", seconds(td));
        resources.release(decoder.graphs());
        double load = resources.takeLoadSeconds();
        // load time inside the run (LOW_MEMORY) is reported as its own stage, not as part of end to end
        listener.onStage("end_to_end", seconds(tStart) - load);
        if (load > 0) {
            listener.onStage("load", load);
        }
        return image;
    }

    /** Classifier-free guidance: uncond + guidance * (cond - uncond), float32 as numpy / torch compute it. */
    static Tensor guide(Tensor uncond, Tensor cond, float guidance) {
        float[] u = uncond.floats();
        float[] c = cond.floats();
        float[] out = new float[u.length];
        for (int i = 0; i < u.length; i++) {
            out[i] = u[i] + guidance * (c[i] - u[i]);
        }
        return Tensor.ofFloats(uncond.shape(), out);
    }

    private static double seconds(long t0) {
        return (System.nanoTime() - t0) / 1e9;
    }

    @Override
    public void close() {
        resources.close();
    }
}
