package dev.mobilesd.json;

import dev.mobilesd.MobileSdException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.json.JSONTokener;

/**
 * Typed access to JSON documents (org.json, the API Android ships) with errors that name the field path,
 * so a malformed manifest says which key is wrong instead of throwing a bare JSONException.
 */
public final class Json {
    private Json() {
    }

    public static JSONObject readObject(Path file, String what) {
        String text;
        try {
            text = new String(Files.readAllBytes(file), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new MobileSdException("cannot read " + what + " " + file + ": " + e.getMessage(),
                    "check that the file exists and is readable");
        }
        try {
            Object value = new JSONTokener(text).nextValue();
            if (!(value instanceof JSONObject)) {
                throw new MobileSdException(what + " " + file + " is not a JSON object", "re-create the file");
            }
            return (JSONObject) value;
        } catch (JSONException e) {
            throw new MobileSdException(what + " " + file + " is not valid JSON (" + e.getMessage() + ")",
                    "re-create the file");
        }
    }

    private static MobileSdException bad(String doc, String path, String expected) {
        return new MobileSdException(doc + ": field '" + path + "' is missing or not " + expected,
                "re-export the bundle with this mobilesd (docs/manifest.md describes the format)");
    }

    public static JSONObject object(JSONObject o, String key, String doc, String path) {
        Object v = o.opt(key);
        if (!(v instanceof JSONObject)) {
            throw bad(doc, path + key, "an object");
        }
        return (JSONObject) v;
    }

    public static JSONArray array(JSONObject o, String key, String doc, String path) {
        Object v = o.opt(key);
        if (!(v instanceof JSONArray)) {
            throw bad(doc, path + key, "a list");
        }
        return (JSONArray) v;
    }

    public static String string(JSONObject o, String key, String doc, String path) {
        Object v = o.opt(key);
        if (!(v instanceof String)) {
            throw bad(doc, path + key, "a string");
        }
        return (String) v;
    }

    public static int integer(JSONObject o, String key, String doc, String path) {
        Object v = o.opt(key);
        if (!(v instanceof Number) || ((Number) v).doubleValue() != Math.rint(((Number) v).doubleValue())) {
            throw bad(doc, path + key, "an integer");
        }
        return ((Number) v).intValue();
    }

    public static double number(JSONObject o, String key, String doc, String path) {
        Object v = o.opt(key);
        if (!(v instanceof Number)) {
            throw bad(doc, path + key, "a number");
        }
        return ((Number) v).doubleValue();
    }

    public static boolean bool(JSONObject o, String key, String doc, String path) {
        Object v = o.opt(key);
        if (!(v instanceof Boolean)) {
            throw bad(doc, path + key, "true or false");
        }
        return (Boolean) v;
    }

    public static int[] intArray(JSONArray a, String doc, String path) {
        int[] out = new int[a.length()];
        for (int i = 0; i < out.length; i++) {
            Object v = a.opt(i);
            if (!(v instanceof Number)) {
                throw bad(doc, path + "[" + i + "]", "an integer");
            }
            out[i] = ((Number) v).intValue();
        }
        return out;
    }

    public static List<String> stringList(JSONArray a, String doc, String path) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < a.length(); i++) {
            Object v = a.opt(i);
            if (!(v instanceof String)) {
                throw bad(doc, path + "[" + i + "]", "a string");
            }
            out.add((String) v);
        }
        return out;
    }

    /**
     * {@code o.put(key, value)}: org.json (Android's) refuses NaN and infinities with a checked exception;
     * such a value in a report is a bug, so it surfaces unchecked.
     */
    public static JSONObject put(JSONObject o, String key, Object value) {
        try {
            return o.put(key, value);
        } catch (JSONException e) {
            throw new IllegalArgumentException("refusing a non-strict JSON value for '" + key + "': " + value, e);
        }
    }

    /** Writes strict JSON (org.json refuses NaN and infinities) to {@code file} through a temporary sibling. */
    public static void writeAtomically(Path file, JSONObject obj) {
        String text;
        try {
            text = obj.toString(2) + "\n";
        } catch (JSONException e) {
            throw new IllegalStateException("refusing to write non-strict JSON: " + e.getMessage(), e);
        }
        dev.mobilesd.AtomicFiles.write(file, text.getBytes(StandardCharsets.UTF_8));
    }
}
