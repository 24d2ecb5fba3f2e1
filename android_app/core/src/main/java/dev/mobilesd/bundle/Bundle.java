package dev.mobilesd.bundle;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.json.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** An opened bundle folder: its manifest, checked file by file (SHA-256) before anything else reads it. */
public final class Bundle {
    public static final String MANIFEST = "manifest.json";

    public final Path root;
    public final Manifest manifest;
    /** SHA-256 of the manifest.json bytes (latency reports name the bundle by it). */
    public final String manifestSha256;
    /** Seconds the checksum verification took. */
    public final double verifySeconds;

    private Bundle(Path root, Manifest manifest, String manifestSha256, double verifySeconds) {
        this.root = root;
        this.manifest = manifest;
        this.manifestSha256 = manifestSha256;
        this.verifySeconds = verifySeconds;
    }

    /** Reads and verifies a bundle; throws {@link MobileSdException} naming the problem otherwise. */
    public static Bundle open(Path root) {
        Path mf = root.resolve(MANIFEST);
        if (!Files.isDirectory(root)) {
            throw new MobileSdException("bundle folder " + root + " does not exist",
                    "pass the folder written by `mobilesd export --target android` (see android_app/README.md)");
        }
        if (!Files.isRegularFile(mf)) {
            throw new MobileSdException(root + " is not a mobilesd bundle (no manifest.json)",
                    "pass the folder written by `mobilesd export --target android`");
        }
        Manifest manifest = Manifest.parse(Json.readObject(mf, "manifest"));
        long t0 = System.nanoTime();
        BundleVerifier.verify(root, manifest);
        double seconds = (System.nanoTime() - t0) / 1e9;
        try {
            return new Bundle(root, manifest, BundleVerifier.sha256(mf), seconds);
        } catch (IOException e) {
            throw new MobileSdException("cannot read " + mf + ": " + e.getMessage(), "check the folder's permissions");
        }
    }

    public Path path(String rel) {
        return BundleVerifier.resolve(root, rel);
    }
}
