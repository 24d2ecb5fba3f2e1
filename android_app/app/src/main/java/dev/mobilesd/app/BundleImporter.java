package dev.mobilesd.app;

import android.content.Context;
import android.net.Uri;
import androidx.documentfile.provider.DocumentFile;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;

/**
 * Copies a bundle folder the user picked (Storage Access Framework tree) into app storage: the core reads
 * bundles as files (checksums, LiteRT's model-from-file), which a content:// tree is not. The copy is checked
 * like any bundle when it is opened.
 */
final class BundleImporter {
    private BundleImporter() {
    }

    static File importTree(Context context, Uri tree, File bundlesDir) throws IOException {
        DocumentFile root = DocumentFile.fromTreeUri(context, tree);
        if (root == null || root.findFile("manifest.json") == null) {
            throw new IOException("the picked folder has no manifest.json: pick a folder written by `mobilesd export`");
        }
        String name = root.getName() != null ? root.getName() : "imported";
        File target = new File(bundlesDir, name);
        File partial = new File(bundlesDir, "." + name + ".partial");
        deleteRecursively(partial);
        copy(context, root, partial);
        deleteRecursively(target);
        if (!partial.renameTo(target)) {
            throw new IOException("cannot move the imported bundle into " + target);
        }
        return target;
    }

    private static void copy(Context context, DocumentFile from, File to) throws IOException {
        Files.createDirectories(to.toPath());
        for (DocumentFile f : from.listFiles()) {
            File dest = new File(to, f.getName());
            if (f.isDirectory()) {
                copy(context, f, dest);
            } else {
                try (InputStream in = context.getContentResolver().openInputStream(f.getUri());
                     OutputStream out = Files.newOutputStream(dest.toPath())) {
                    byte[] buf = new byte[1 << 20];
                    int n;
                    while ((n = in.read(buf)) > 0) {
                        out.write(buf, 0, n);
                    }
                }
            }
        }
    }

    static void deleteRecursively(File f) {
        File[] children = f.listFiles();
        if (children != null) {
            for (File c : children) {
                deleteRecursively(c);
            }
        }
        f.delete();
    }
}
