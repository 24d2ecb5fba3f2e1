package dev.mobilesd.testing;

import dev.mobilesd.bundle.BundleVerifier;
import dev.mobilesd.json.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * Small bundles for the core's unit tests: a format-version-2 manifest (checked against the repository's
 * schema by the tests), the golden vectors' real CLIP tokenizer files and SD scheduler config, and graph files
 * whose bytes are placeholders (the tests' runners replay recorded outputs instead of executing them).
 * The real LiteRT runtime on real exported bundles is covered end to end by tests/test_app_android.py.
 */
public final class TestBundles {
    private TestBundles() {
    }

    /** One graph entry; {@code io} alternates name, dtype, shape for inputs, then "->", then outputs. */
    public static JSONObject graph(String name, String role, JSONObject aliases, Object... io) {
        JSONObject g = new JSONObject();
        Json.put(g, "name", name);
        Json.put(g, "role", role);
        Json.put(g, "file", name + ".tflite");
        Json.put(g, "format", "tflite");
        Json.put(g, "precision", "fp16");
        JSONArray inputs = new JSONArray();
        JSONArray outputs = new JSONArray();
        JSONArray target = inputs;
        for (int i = 0; i < io.length; ) {
            if ("->".equals(io[i])) {
                target = outputs;
                i++;
                continue;
            }
            JSONObject t = new JSONObject();
            Json.put(t, "name", io[i]);
            Json.put(t, "dtype", io[i + 1]);
            Json.put(t, "shape", new JSONArray(java.util.Arrays.asList((Integer[]) io[i + 2])));
            target.put(t);
            i += 3;
        }
        Json.put(g, "inputs", inputs);
        Json.put(g, "outputs", outputs);
        Json.put(g, "size_bytes", 1);
        Json.put(g, "sha256", "0".repeat(64));
        JSONObject meta = new JSONObject();
        if ("unet".equals(role)) {
            Json.put(meta, "aliases", aliases != null ? aliases : new JSONObject());
        }
        Json.put(g, "meta", meta);
        JSONObject v = new JSONObject();
        Json.put(v, "rel_l2", 0.001);
        JSONObject per = new JSONObject();
        Json.put(per, ((JSONObject) outputs.opt(0)).optString("name"), 0.001);
        Json.put(v, "rel_l2_per_output", per);
        Json.put(v, "max_abs", 0.01);
        Json.put(v, "threshold", 0.02);
        Json.put(v, "passed", true);
        Json.put(v, "runtime", "tflite");
        Json.put(g, "verification", v);
        return g;
    }

    public static Integer[] dims(Integer... d) {
        return d;
    }

    /** A manifest for an 8x8 latent, 32x32 image, hidden size 32 (the default digits model's shapes). */
    public static JSONObject manifest(String cfgMode, int unetBatch, List<JSONObject> unetGraphs) {
        JSONObject m = new JSONObject();
        Json.put(m, "format", "mobilesd-bundle");
        Json.put(m, "format_version", 2);
        Json.put(m, "bundle_id", "android-0123456789abcdef");
        Json.put(m, "mobilesd_version", "0.1.0");
        Json.put(m, "created", "2026-01-01T00:00:00Z");
        Json.put(m, "target", "android");
        Json.put(m, "precision", "fp16");
        JSONObject src = new JSONObject();
        Json.put(src, "model", "assets/tiny-digits-sd");
        Json.put(src, "prediction_type", "epsilon");
        Json.put(m, "source", src);
        JSONObject image = new JSONObject();
        Json.put(image, "height", 32);
        Json.put(image, "width", 32);
        Json.put(image, "channels", 3);
        Json.put(image, "layout", "NHWC");
        Json.put(image, "range", new JSONArray(java.util.Arrays.asList(0.0, 1.0)));
        Json.put(m, "image", image);
        JSONObject latent = new JSONObject();
        Json.put(latent, "channels", 4);
        Json.put(latent, "height", 8);
        Json.put(latent, "width", 8);
        Json.put(latent, "scaling_factor", 0.79);
        Json.put(latent, "vae_scale_factor", 4);
        Json.put(m, "latent", latent);
        JSONObject tok = new JSONObject();
        Json.put(tok, "type", "clip_bpe");
        Json.put(tok, "dir", "tokenizer");
        Json.put(tok, "vocab", "tokenizer/vocab.json");
        Json.put(tok, "merges", "tokenizer/merges.txt");
        Json.put(tok, "max_length", 77);
        Json.put(tok, "bos_id", 49406);
        Json.put(tok, "eos_id", 49407);
        Json.put(tok, "pad_id", 49407);
        Json.put(tok, "lowercase", true);
        Json.put(tok, "padding", "max_length");
        Json.put(m, "tokenizer", tok);
        JSONObject sch = new JSONObject();
        Json.put(sch, "config", "scheduler/scheduler_config.json");
        Json.put(sch, "default", "dpm");
        Json.put(sch, "supported", new JSONArray(java.util.Arrays.asList("dpm", "euler", "ddim", "lcm")));
        Json.put(sch, "train_timesteps", 1000);
        Json.put(m, "scheduler", sch);
        JSONObject cfg = new JSONObject();
        Json.put(cfg, "mode", cfgMode);
        Json.put(cfg, "unet_batch", unetBatch);
        Json.put(cfg, "batch_order", new JSONArray(java.util.Arrays.asList("unconditional", "conditional")));
        Json.put(cfg, "default_guidance", 7.5);
        Json.put(cfg, "negative_prompt_default", "");
        Json.put(m, "cfg", cfg);
        JSONObject unet = new JSONObject();
        JSONArray chunks = new JSONArray();
        for (JSONObject g : unetGraphs) {
            chunks.put(g.optString("name"));
        }
        Json.put(unet, "chunks", chunks);
        JSONObject ts = new JSONObject();
        Json.put(ts, "shape", new JSONArray(java.util.Arrays.asList(1)));
        Json.put(ts, "dtype", "float32");
        Json.put(unet, "timestep", ts);
        Json.put(m, "unet", unet);
        JSONArray graphs = new JSONArray();
        graphs.put(graph("text_encoder", "text_encoder", null, "input_ids", "int32", dims(1, 77), "->",
                "last_hidden_state", "float32", dims(1, 77, 32)));
        for (JSONObject g : unetGraphs) {
            graphs.put(g);
        }
        graphs.put(graph("vae_decoder", "vae_decoder", null, "latent", "float32", dims(1, 4, 8, 8), "->",
                "image", "float32", dims(1, 32, 32, 3)));
        Json.put(m, "graphs", graphs);
        Json.put(m, "quantization", JSONObject.NULL);
        JSONObject ver = new JSONObject();
        JSONObject thr = new JSONObject();
        Json.put(thr, "fp16", 0.02);
        Json.put(ver, "graph_thresholds", thr);
        Json.put(ver, "image_thresholds", thr);
        Json.put(ver, "gpu_thresholds", thr);
        JSONObject e2e = new JSONObject();
        Json.put(e2e, "mean_abs", 0.0001);
        Json.put(e2e, "max_abs", 0.001);
        Json.put(e2e, "threshold", 0.03);
        Json.put(e2e, "passed", true);
        Json.put(e2e, "settings", new JSONObject());
        Json.put(e2e, "runtime", "tflite");
        Json.put(ver, "end_to_end", e2e);
        Json.put(ver, "passed", true);
        Json.put(m, "verification", ver);
        Json.put(m, "files", new JSONObject());
        return m;
    }

    /** The single-graph batch-2 UNet entry. */
    public static JSONObject unetGraph(int batch) {
        return graph("unet", "unet", null, "sample", "float32", dims(batch, 4, 8, 8), "timestep", "float32", dims(1),
                "encoder_hidden_states", "float32", dims(batch, 77, 32), "->", "noise_pred", "float32", dims(batch, 4, 8, 8));
    }

    /**
     * Writes the bundle folder: golden tokenizer files, the golden SD scheduler config, a placeholder file per
     * graph, and the manifest with the real size and SHA-256 of every file.
     */
    public static Path write(Path dir, JSONObject manifest) throws IOException {
        Files.createDirectories(dir.resolve("tokenizer"));
        Files.createDirectories(dir.resolve("scheduler"));
        Files.copy(Golden.file("tokenizer/vocab.json"), dir.resolve("tokenizer/vocab.json"));
        Files.copy(Golden.file("tokenizer/merges.txt"), dir.resolve("tokenizer/merges.txt"));
        JSONObject config = Golden.section("schedulers").optJSONObject("configs").optJSONObject("sd_epsilon");
        Files.write(dir.resolve("scheduler/scheduler_config.json"), config.toString().getBytes(StandardCharsets.UTF_8));
        JSONArray graphs = manifest.optJSONArray("graphs");
        for (int i = 0; i < graphs.length(); i++) {
            JSONObject g = graphs.optJSONObject(i);
            Files.write(dir.resolve(g.optString("file")), ("placeholder graph " + g.optString("name"))
                    .getBytes(StandardCharsets.UTF_8));
        }
        JSONObject files = new JSONObject();
        try (java.util.stream.Stream<Path> walk = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) walk::iterator) {
                if (Files.isRegularFile(p) && !p.getFileName().toString().equals("manifest.json")) {
                    JSONObject e = new JSONObject();
                    Json.put(e, "sha256", BundleVerifier.sha256(p));
                    Json.put(e, "size", Files.size(p));
                    Json.put(files, dir.relativize(p).toString().replace('\\', '/'), e);
                }
            }
        }
        Json.put(manifest, "files", files);
        for (int i = 0; i < graphs.length(); i++) {
            JSONObject g = graphs.optJSONObject(i);
            JSONObject f = files.optJSONObject(g.optString("file"));
            Json.put(g, "sha256", f.optString("sha256"));
            Json.put(g, "size_bytes", f.optLong("size"));
        }
        Json.writeAtomically(dir.resolve("manifest.json"), manifest);
        return dir;
    }

    /** The repository's manifest schema (mobilesd/schemas/manifest.schema.json, read in place: no copies). */
    public static JsonSchemaValidator manifestSchema() {
        return new JsonSchemaValidator(Json.readObject(Golden.repo().resolve("mobilesd/schemas/manifest.schema.json"),
                "manifest schema"));
    }

    public static JsonSchemaValidator latencyReportSchema() {
        return new JsonSchemaValidator(Json.readObject(
                Golden.repo().resolve("mobilesd/latency/latency_report.schema.json"), "latency report schema"));
    }

    /** chunk0 makes hidden, temb and skip_0 (its last skip is its hidden: alias skip_1); chunk1 reads skip_1. */
    public static List<JSONObject> threeChunkUnet() {
        JSONObject alias = new JSONObject();
        Json.put(alias, "skip_1", "hidden");
        Integer[] s = dims(2, 4, 8, 8);
        List<JSONObject> g = new java.util.ArrayList<>();
        g.add(graph("unet_chunk0", "unet", alias, "sample", "float32", s, "timestep", "float32",
                dims(1), "encoder_hidden_states", "float32", dims(2, 77, 32), "->",
                "hidden", "float32", s, "temb", "float32", dims(2, 8), "skip_0", "float32", s));
        g.add(graph("unet_chunk1", "unet", null, "hidden", "float32", s, "skip_1", "float32", s, "->",
                "hidden", "float32", s));
        g.add(graph("unet_chunk2", "unet", null, "hidden", "float32", s, "temb", "float32",
                dims(2, 8), "skip_0", "float32", s, "->", "noise_pred", "float32", s));
        return g;
    }
}
