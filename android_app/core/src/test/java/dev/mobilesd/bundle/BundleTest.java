package dev.mobilesd.bundle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.json.Json;
import dev.mobilesd.testing.TestBundles;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.List;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The manifest reader and the checksum check: what the app refuses before any graph runs, and why. */
class BundleTest {
    @TempDir
    Path tmp;

    private Path bundle() throws Exception {
        return TestBundles.write(tmp.resolve("b"), TestBundles.manifest("batch", 2,
                Collections.singletonList(TestBundles.unetGraph(2))));
    }

    @Test
    void theTestManifestIsValidAgainstTheRepositorySchema() throws Exception {
        Path dir = bundle();
        List<String> errors = TestBundles.manifestSchema().validate(Json.readObject(dir.resolve("manifest.json"), "m"));
        assertTrue(errors.isEmpty(), "schema errors: " + errors);
        Bundle b = Bundle.open(dir);
        assertEquals("batch", b.manifest.cfg.mode);
        assertEquals(64, b.manifestSha256.length());
    }

    @Test
    void theSchemaValidatorCatchesWhatTheSchemaForbids() throws Exception {
        JSONObject m = Json.readObject(bundle().resolve("manifest.json"), "m");
        Json.put(m.optJSONObject("cfg"), "unet_batch", 3);
        Json.put(m, "bundle_id", "Not An Id");
        m.remove("files");
        List<String> errors = TestBundles.manifestSchema().validate(m);
        assertTrue(errors.stream().anyMatch(e -> e.contains("cfg.unet_batch")), errors.toString());
        assertTrue(errors.stream().anyMatch(e -> e.contains("bundle_id")), errors.toString());
        assertTrue(errors.stream().anyMatch(e -> e.contains("'files'")), errors.toString());
    }

    @Test
    void anotherFormatVersionIsRefusedWithTheFix() throws Exception {
        Path dir = bundle();
        JSONObject m = Json.readObject(dir.resolve("manifest.json"), "m");
        Json.put(m, "format_version", 1);
        Json.writeAtomically(dir.resolve("manifest.json"), m);
        MobileSdException e = assertThrows(MobileSdException.class, () -> Bundle.open(dir));
        assertTrue(e.problem().contains("format version 1"), e.getMessage());
        assertTrue(e.fix().contains("re-export"), e.getMessage());
    }

    @Test
    void oneChangedByteInAGraphIsRefusedNamingTheFile() throws Exception {
        Path dir = bundle();
        Path graph = dir.resolve("unet.tflite");
        byte[] bytes = Files.readAllBytes(graph);
        bytes[bytes.length / 2] ^= 1;
        Files.write(graph, bytes);
        MobileSdException e = assertThrows(MobileSdException.class, () -> Bundle.open(dir));
        assertTrue(e.problem().contains("unet.tflite") && e.problem().contains("SHA-256"), e.getMessage());
    }

    @Test
    void aMissingFileIsRefused() throws Exception {
        Path dir = bundle();
        Files.delete(dir.resolve("tokenizer/merges.txt"));
        MobileSdException e = assertThrows(MobileSdException.class, () -> Bundle.open(dir));
        assertTrue(e.problem().contains("tokenizer/merges.txt") && e.problem().contains("missing"), e.getMessage());
    }

    @Test
    void aFileOutsideTheBundleIsRefused() throws Exception {
        Path dir = bundle();
        JSONObject m = Json.readObject(dir.resolve("manifest.json"), "m");
        JSONObject entry = new JSONObject();
        Json.put(entry, "sha256", "0".repeat(64));
        Json.put(entry, "size", 1);
        Json.put(m.optJSONObject("files"), "../outside.bin", entry);
        Json.writeAtomically(dir.resolve("manifest.json"), m);
        MobileSdException e = assertThrows(MobileSdException.class, () -> Bundle.open(dir));
        assertTrue(e.problem().contains("outside the bundle"), e.getMessage());
    }

    @Test
    void aGraphFormatTheAppCannotRunIsRefused() throws Exception {
        JSONObject m = TestBundles.manifest("batch", 2, Collections.singletonList(TestBundles.unetGraph(2)));
        Json.put(m.optJSONArray("graphs").optJSONObject(0), "format", "onnx");
        MobileSdException e = assertThrows(MobileSdException.class, () -> Manifest.parse(m));
        assertTrue(e.problem().contains("onnx") && e.fix().contains("--target android"), e.getMessage());
    }

    @Test
    void aCfgModeThatContradictsTheBatchIsRefused() {
        JSONObject m = TestBundles.manifest("sequential", 2, Collections.singletonList(TestBundles.unetGraph(2)));
        MobileSdException e = assertThrows(MobileSdException.class, () -> Manifest.parse(m));
        assertTrue(e.problem().contains("cfg.mode"), e.getMessage());
    }

    @Test
    void simulatedActivationBundlesAreRefused() {
        JSONObject m = TestBundles.manifest("batch", 2, Collections.singletonList(TestBundles.unetGraph(2)));
        JSONObject q = new JSONObject();
        Json.put(q, "method", "tdq");
        Json.put(q, "weight_bits", 8);
        Json.put(q, "act_bits", 8);
        Json.put(q, "simulate_activations", true);
        Json.put(m, "quantization", q);
        MobileSdException e = assertThrows(MobileSdException.class, () -> Manifest.parse(m));
        assertTrue(e.problem().contains("step_index"), e.getMessage());
    }
}
