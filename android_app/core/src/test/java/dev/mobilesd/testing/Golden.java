package dev.mobilesd.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.mobilesd.json.Json;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.json.JSONObject;

/**
 * The golden vectors the Python reference writes (docs/golden-vectors.md): found through MOBILESD_GOLDEN
 * (default build/golden at the repository root), refused when the format or its version is not the one
 * these tests read.
 */
public final class Golden {
    public static final int FORMAT_VERSION = 1;
    private static Path root;

    private Golden() {
    }

    /** The repository root: MOBILESD_REPO, or the first parent of the working directory holding mobilesd/schemas. */
    public static Path repo() {
        String env = System.getenv("MOBILESD_REPO");
        if (env != null && !env.isEmpty()) {
            return Paths.get(env).toAbsolutePath();
        }
        for (Path p = Paths.get("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve("mobilesd").resolve("schemas"))) {
                return p;
            }
        }
        throw new IllegalStateException("cannot find the repository root; set MOBILESD_REPO");
    }

    public static synchronized Path root() {
        if (root == null) {
            String env = System.getenv("MOBILESD_GOLDEN");
            Path r = env != null && !env.isEmpty() ? Paths.get(env) : repo().resolve("build").resolve("golden");
            Path index = r.resolve("index.json");
            assertTrue(Files.isRegularFile(index), "no golden vectors at " + r + ": run `.venv/bin/python -m "
                    + "mobilesd.golden --out build/golden` (scripts/test_android.sh does) or set MOBILESD_GOLDEN");
            JSONObject idx = Json.readObject(index, "golden index");
            assertEquals("mobilesd-golden", idx.optString("format"), "golden vectors of another format");
            assertEquals(FORMAT_VERSION, idx.optInt("format_version"), "golden vectors format version "
                    + idx.opt("format_version") + " is not the one these tests read (" + FORMAT_VERSION + ")");
            root = r;
        }
        return root;
    }

    public static JSONObject section(String name) {
        JSONObject idx = Json.readObject(root().resolve("index.json"), "golden index");
        return Json.readObject(root().resolve(idx.optJSONObject("sections").optString(name)), "golden section " + name);
    }

    public static Path file(String rel) {
        return root().resolve(rel);
    }

    private static ByteBuffer bytes(JSONObject ref, String dtype) {
        assertEquals(dtype, ref.optString("dtype"), "golden array " + ref.optString("file"));
        try {
            return ByteBuffer.wrap(Files.readAllBytes(root().resolve(ref.optString("file")))).order(ByteOrder.LITTLE_ENDIAN);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    public static float[] floats(JSONObject ref) {
        ByteBuffer b = bytes(ref, "float32");
        float[] out = new float[b.remaining() / 4];
        b.asFloatBuffer().get(out);
        return out;
    }

    public static int[] ints(JSONObject ref) {
        ByteBuffer b = bytes(ref, "int32");
        int[] out = new int[b.remaining() / 4];
        b.asIntBuffer().get(out);
        return out;
    }

    public static int[] shape(JSONObject ref) {
        org.json.JSONArray a = ref.optJSONArray("shape");
        int[] s = new int[a.length()];
        for (int i = 0; i < s.length; i++) {
            s[i] = a.optInt(i);
        }
        return s;
    }

    /** Relative L2 error |a - b| / |b| (0 when both are zero). */
    public static double relL2(float[] a, int aOffset, float[] b, int bOffset, int n) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < n; i++) {
            double d = (double) a[aOffset + i] - b[bOffset + i];
            num += d * d;
            den += (double) b[bOffset + i] * b[bOffset + i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }
}
