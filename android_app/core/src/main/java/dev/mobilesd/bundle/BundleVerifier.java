package dev.mobilesd.bundle;

import dev.mobilesd.MobileSdException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Map;

/**
 * Checks every file the manifest lists (size and SHA-256) before any graph is opened: a bundle that was
 * copied half-way or altered is refused with the name of the first bad file.
 */
public final class BundleVerifier {
    private BundleVerifier() {
    }

    public static String sha256(Path file) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the platform has no SHA-256", e);
        }
        byte[] buf = new byte[1 << 20];
        try (InputStream in = Files.newInputStream(file)) {
            int n;
            while ((n = in.read(buf)) > 0) {
                md.update(buf, 0, n);
            }
        }
        return hex(md.digest());
    }

    public static String hex(byte[] digest) {
        StringBuilder sb = new StringBuilder(digest.length * 2);
        for (byte b : digest) {
            sb.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
        }
        return sb.toString();
    }

    /** Resolves a manifest path inside the bundle, refusing absolute paths and '..' (a manifest never has them). */
    public static Path resolve(Path root, String rel) {
        Path p = root.resolve(rel).normalize();
        if (rel.startsWith("/") || !p.startsWith(root.normalize())) {
            throw new MobileSdException("manifest.json names a file outside the bundle: " + rel,
                    "re-export the bundle; a manifest only lists files inside its folder");
        }
        return p;
    }

    /** Verifies every file; throws on the first missing or changed one. */
    public static void verify(Path root, Manifest manifest) {
        for (Map.Entry<String, Manifest.FileEntry> e : manifest.files.entrySet()) {
            String rel = e.getKey();
            Path p = resolve(root, rel);
            if (!Files.isRegularFile(p)) {
                throw new MobileSdException("bundle file " + rel + " is missing",
                        "copy the whole bundle folder again (adb push keeps every file)");
            }
            try {
                long size = Files.size(p);
                if (size != e.getValue().size) {
                    throw new MobileSdException("bundle file " + rel + " has " + size + " bytes, the manifest says "
                            + e.getValue().size, "copy the bundle again; the copy is incomplete or altered");
                }
                String sha = sha256(p);
                if (!sha.equals(e.getValue().sha256)) {
                    throw new MobileSdException("bundle file " + rel + " does not match its SHA-256 in manifest.json "
                            + "(changed or corrupted)", "copy the bundle again, or re-export it");
                }
            } catch (IOException ex) {
                throw new MobileSdException("cannot read bundle file " + rel + ": " + ex.getMessage(),
                        "check the bundle folder's permissions");
            }
        }
        for (GraphSpec g : manifest.graphs.values()) {
            Manifest.FileEntry f = manifest.files.get(g.file);
            if (f == null) {
                throw new MobileSdException("graph " + g.name + " (" + g.file + ") is not in the manifest's file table",
                        "re-export the bundle");
            }
            if (!f.sha256.equals(g.sha256)) {
                throw new MobileSdException("graph " + g.name + ": its sha256 differs from the file table's",
                        "re-export the bundle");
            }
        }
        for (String rel : new String[] {manifest.tokenizer.vocab, manifest.tokenizer.merges, manifest.scheduler.config}) {
            if (!manifest.files.containsKey(rel)) {
                throw new MobileSdException("manifest.json names " + rel + " but does not list it in files",
                        "re-export the bundle");
            }
        }
    }
}
