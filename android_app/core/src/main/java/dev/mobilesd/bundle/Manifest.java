package dev.mobilesd.bundle;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.json.Json;
import dev.mobilesd.runtime.Tensor;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * A bundle's manifest.json (format version 2, mobilesd/schemas/manifest.schema.json), read into what the
 * app needs: graphs and their I/O, tokenizer, scheduler, CFG, UNet chunk order, file checksums.
 *
 * <p>The client never guesses: a manifest it does not understand (another format version, graphs it cannot
 * run, a CFG mode or scheduler it does not know) is refused here, before any graph is opened.
 */
public final class Manifest {
    public static final String FORMAT = "mobilesd-bundle";
    public static final int FORMAT_VERSION = 2;
    private static final String DOC = "manifest.json";

    /** {@code tokenizer}: CLIP BPE files and special ids. */
    public static final class Tokenizer {
        public final String vocab;
        public final String merges;
        public final int maxLength;
        public final int bosId;
        public final int eosId;
        public final int padId;
        public final boolean lowercase;

        Tokenizer(String vocab, String merges, int maxLength, int bosId, int eosId, int padId, boolean lowercase) {
            this.vocab = vocab;
            this.merges = merges;
            this.maxLength = maxLength;
            this.bosId = bosId;
            this.eosId = eosId;
            this.padId = padId;
            this.lowercase = lowercase;
        }
    }

    /** {@code cfg}: how classifier-free guidance runs. */
    public static final class Cfg {
        /** batch, sequential or none. */
        public final String mode;
        public final int unetBatch;
        public final double defaultGuidance;
        public final String negativePromptDefault;

        Cfg(String mode, int unetBatch, double defaultGuidance, String negativePromptDefault) {
            this.mode = mode;
            this.unetBatch = unetBatch;
            this.defaultGuidance = defaultGuidance;
            this.negativePromptDefault = negativePromptDefault;
        }
    }

    /** {@code scheduler}: the diffusers config file and which schedulers the bundle allows. */
    public static final class SchedulerInfo {
        public final String config;
        public final String defaultName;
        public final List<String> supported;
        /** Overrides the config's timestep_spacing for every scheduler when not null. */
        public final String timestepSpacing;

        SchedulerInfo(String config, String defaultName, List<String> supported, String timestepSpacing) {
            this.config = config;
            this.defaultName = defaultName;
            this.supported = Collections.unmodifiableList(supported);
            this.timestepSpacing = timestepSpacing;
        }
    }

    /** One {@code files} entry. */
    public static final class FileEntry {
        public final String sha256;
        public final long size;

        FileEntry(String sha256, long size) {
            this.sha256 = sha256;
            this.size = size;
        }
    }

    public final JSONObject json;
    public final String bundleId;
    public final String target;
    public final String precision;
    public final String sourceModel;
    public final String predictionType;
    public final int imageHeight;
    public final int imageWidth;
    public final int latentChannels;
    public final int latentHeight;
    public final int latentWidth;
    public final Tokenizer tokenizer;
    public final SchedulerInfo scheduler;
    public final Cfg cfg;
    public final List<String> unetChunks;
    public final Map<String, GraphSpec> graphs;
    public final Map<String, FileEntry> files;

    private Manifest(JSONObject m) {
        this.json = m;
        String format = m.optString("format", "");
        if (!FORMAT.equals(format)) {
            throw new MobileSdException(DOC + " is not a mobilesd manifest (format '" + format + "')",
                    "pass a bundle folder written by `mobilesd export`");
        }
        Object version = m.opt("format_version");
        if (!(version instanceof Number) || ((Number) version).intValue() != FORMAT_VERSION
                || ((Number) version).doubleValue() != FORMAT_VERSION) {
            throw new MobileSdException("bundle format version " + version + " is not supported (this app reads version "
                    + FORMAT_VERSION + ")", "re-export the bundle with a mobilesd that writes format version "
                    + FORMAT_VERSION + " (`mobilesd export --target android`)");
        }
        bundleId = Json.string(m, "bundle_id", DOC, "");
        target = Json.string(m, "target", DOC, "");
        precision = Json.string(m, "precision", DOC, "");

        JSONObject source = Json.object(m, "source", DOC, "");
        sourceModel = Json.string(source, "model", DOC, "source.");
        predictionType = Json.string(source, "prediction_type", DOC, "source.");

        JSONObject image = Json.object(m, "image", DOC, "");
        imageHeight = Json.integer(image, "height", DOC, "image.");
        imageWidth = Json.integer(image, "width", DOC, "image.");
        if (Json.integer(image, "channels", DOC, "image.") != 3 || !"NHWC".equals(Json.string(image, "layout", DOC, "image."))) {
            throw new MobileSdException(DOC + ": image must be 3-channel NHWC", "re-export the bundle");
        }
        JSONObject latent = Json.object(m, "latent", DOC, "");
        latentChannels = Json.integer(latent, "channels", DOC, "latent.");
        latentHeight = Json.integer(latent, "height", DOC, "latent.");
        latentWidth = Json.integer(latent, "width", DOC, "latent.");

        JSONObject tok = Json.object(m, "tokenizer", DOC, "");
        String tokType = Json.string(tok, "type", DOC, "tokenizer.");
        if (!"clip_bpe".equals(tokType) || !"max_length".equals(Json.string(tok, "padding", DOC, "tokenizer."))) {
            throw new MobileSdException(DOC + ": tokenizer type '" + tokType + "' is not supported (this app has the "
                    + "CLIP BPE tokenizer with max_length padding)", "export an SD 1.x / 2.x model");
        }
        tokenizer = new Tokenizer(Json.string(tok, "vocab", DOC, "tokenizer."), Json.string(tok, "merges", DOC, "tokenizer."),
                Json.integer(tok, "max_length", DOC, "tokenizer."), Json.integer(tok, "bos_id", DOC, "tokenizer."),
                Json.integer(tok, "eos_id", DOC, "tokenizer."), Json.integer(tok, "pad_id", DOC, "tokenizer."),
                Json.bool(tok, "lowercase", DOC, "tokenizer."));

        JSONObject sch = Json.object(m, "scheduler", DOC, "");
        String spacing = sch.has("timestep_spacing") && !sch.isNull("timestep_spacing")
                ? Json.string(sch, "timestep_spacing", DOC, "scheduler.") : null;
        scheduler = new SchedulerInfo(Json.string(sch, "config", DOC, "scheduler."),
                Json.string(sch, "default", DOC, "scheduler."),
                Json.stringList(Json.array(sch, "supported", DOC, "scheduler."), DOC, "scheduler.supported"), spacing);

        JSONObject c = Json.object(m, "cfg", DOC, "");
        String mode = Json.string(c, "mode", DOC, "cfg.");
        int unetBatch = Json.integer(c, "unet_batch", DOC, "cfg.");
        if (!("batch".equals(mode) || "sequential".equals(mode) || "none".equals(mode))) {
            throw new MobileSdException(DOC + ": cfg.mode '" + mode + "' is not known to this app",
                    "use a bundle with cfg.mode batch, sequential or none");
        }
        if (unetBatch != 1 && unetBatch != 2) {
            throw new MobileSdException(DOC + ": cfg.unet_batch " + unetBatch + " is not 1 or 2", "re-export the bundle");
        }
        if ("batch".equals(mode) != (unetBatch == 2)) {
            throw new MobileSdException(DOC + ": cfg.mode '" + mode + "' does not match cfg.unet_batch " + unetBatch,
                    "re-export the bundle");
        }
        List<String> order = Json.stringList(Json.array(c, "batch_order", DOC, "cfg."), DOC, "cfg.batch_order");
        if (unetBatch == 2 && !order.equals(java.util.Arrays.asList("unconditional", "conditional"))) {
            throw new MobileSdException(DOC + ": cfg.batch_order " + order + " is not [unconditional, conditional]",
                    "re-export the bundle");
        }
        cfg = new Cfg(mode, unetBatch, Json.number(c, "default_guidance", DOC, "cfg."),
                Json.string(c, "negative_prompt_default", DOC, "cfg."));

        Object quant = m.opt("quantization");
        if (quant instanceof JSONObject) {
            JSONObject q = (JSONObject) quant;
            if (q.optBoolean("simulate_activations", false) || q.has("step_index")) {
                throw new MobileSdException("this bundle's UNet graphs take a step_index input (exported with "
                        + "--simulate-activations): a numerics reference for the host, not an app bundle",
                        "export without --simulate-activations");
            }
        }

        JSONObject unet = Json.object(m, "unet", DOC, "");
        unetChunks = Collections.unmodifiableList(Json.stringList(Json.array(unet, "chunks", DOC, "unet."), DOC, "unet.chunks"));

        Map<String, FileEntry> fileTable = new LinkedHashMap<>();
        JSONObject filesJson = Json.object(m, "files", DOC, "");
        Iterator<String> keys = filesJson.keys();
        while (keys.hasNext()) {
            String rel = keys.next();
            JSONObject e = Json.object(filesJson, rel, DOC, "files.");
            fileTable.put(rel, new FileEntry(Json.string(e, "sha256", DOC, "files." + rel + "."),
                    (long) Json.number(e, "size", DOC, "files." + rel + ".")));
        }
        files = Collections.unmodifiableMap(fileTable);

        Map<String, GraphSpec> graphTable = new LinkedHashMap<>();
        JSONArray gs = Json.array(m, "graphs", DOC, "");
        for (int i = 0; i < gs.length(); i++) {
            GraphSpec g = parseGraph(gs.optJSONObject(i), "graphs[" + i + "].");
            graphTable.put(g.name, g);
        }
        graphs = Collections.unmodifiableMap(graphTable);
        for (String role : new String[] {"text_encoder", "vae_decoder"}) {
            if (!graphs.containsKey(role)) {
                throw broken(DOC + " lists no " + role + " graph");
            }
        }
        if (unetChunks.isEmpty()) {
            throw broken(DOC + ": unet.chunks is empty");
        }
        for (String chunk : unetChunks) {
            GraphSpec g = graphs.get(chunk);
            if (g == null || !"unet".equals(g.role)) {
                throw broken(DOC + ": unet.chunks names '" + chunk + "', which is not a unet graph");
            }
        }
    }

    /** The refusal for a structurally broken manifest (same fix every time). */
    private static MobileSdException broken(String problem) {
        return new MobileSdException(problem, "re-export the bundle with `mobilesd export --target android`");
    }

    private static GraphSpec parseGraph(JSONObject g, String path) {
        if (g == null) {
            throw broken(DOC + ": " + path + " is not an object");
        }
        String name = Json.string(g, "name", DOC, path);
        String format = Json.string(g, "format", DOC, path);
        if (!"tflite".equals(format)) {
            throw new MobileSdException("graph " + name + " is a " + format + " file; this app runs TFLite (LiteRT) graphs",
                    "export the bundle with `mobilesd export --target android`");
        }
        JSONObject meta = Json.object(g, "meta", DOC, path);
        Map<String, String> aliases = new LinkedHashMap<>();
        JSONObject al = meta.optJSONObject("aliases");
        if (al != null) {
            Iterator<String> it = al.keys();
            while (it.hasNext()) {
                String k = it.next();
                aliases.put(k, Json.string(al, k, DOC, path + "meta.aliases."));
            }
        }
        return new GraphSpec(name, Json.string(g, "role", DOC, path), Json.string(g, "file", DOC, path), format,
                Json.string(g, "precision", DOC, path), Json.string(g, "sha256", DOC, path),
                (long) Json.number(g, "size_bytes", DOC, path),
                tensors(Json.array(g, "inputs", DOC, path), path + "inputs"),
                tensors(Json.array(g, "outputs", DOC, path), path + "outputs"), aliases);
    }

    private static List<TensorSpec> tensors(JSONArray a, String path) {
        List<TensorSpec> out = new ArrayList<>();
        for (int i = 0; i < a.length(); i++) {
            JSONObject t = a.optJSONObject(i);
            String p = path + "[" + i + "].";
            if (t == null) {
                throw broken(DOC + ": " + p + " is not an object");
            }
            String dtype = Json.string(t, "dtype", DOC, p);
            if (!"float32".equals(dtype) && !"int32".equals(dtype)) {
                throw broken(DOC + ": " + p + "dtype '" + dtype + "' is not float32 or int32");
            }
            out.add(new TensorSpec(Json.string(t, "name", DOC, p), Json.intArray(Json.array(t, "shape", DOC, p), DOC, p + "shape"),
                    Tensor.DType.fromManifest(dtype)));
        }
        return out;
    }

    /** Parses a manifest already read as JSON (tests and {@link Bundle#open}). */
    public static Manifest parse(JSONObject json) {
        return new Manifest(json);
    }

    public GraphSpec graph(String name) {
        GraphSpec g = graphs.get(name);
        if (g == null) {
            throw broken(DOC + " has no graph '" + name + "'");
        }
        return g;
    }

    public List<GraphSpec> unetGraphs() {
        List<GraphSpec> out = new ArrayList<>();
        for (String n : unetChunks) {
            out.add(graph(n));
        }
        return out;
    }
}
