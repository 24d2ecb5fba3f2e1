package dev.mobilesd.testing;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * A JSON Schema (2020-12) validator for the keywords the project's two schemas use (manifest and latency
 * report): type, const, enum, required, properties, additionalProperties, propertyNames, minProperties,
 * items, minItems, maxItems, uniqueItems, minimum, maximum, exclusiveMinimum, minLength, maxLength, pattern,
 * $ref (local), oneOf, allOf, if/then. Written here because Debian has no JSON Schema library for Java
 * ({@code apt-cache search json schema java} finds none); a keyword outside this set fails loudly, so a schema
 * change cannot be silently half-checked.
 */
public final class JsonSchemaValidator {
    private static final Set<String> ANNOTATIONS = new HashSet<>(Arrays.asList(
            "$schema", "$id", "$defs", "title", "description", "$comment", "examples", "default"));
    private static final Set<String> KEYWORDS = new HashSet<>(Arrays.asList(
            "type", "const", "enum", "required", "properties", "additionalProperties", "propertyNames", "minProperties",
            "items", "minItems", "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum", "minLength",
            "maxLength", "pattern", "$ref", "oneOf", "allOf", "if", "then"));
    private final JSONObject root;

    public JsonSchemaValidator(JSONObject schema) {
        this.root = schema;
    }

    /** Every violation as "path: message"; empty when the instance is valid. */
    public List<String> validate(Object instance) {
        List<String> errors = new ArrayList<>();
        check(root, instance, "$", errors);
        return errors;
    }

    private JSONObject resolve(String ref) {
        if (!ref.startsWith("#/")) {
            throw new IllegalArgumentException("only local $refs are supported: " + ref);
        }
        Object node = root;
        for (String part : ref.substring(2).split("/")) {
            node = ((JSONObject) node).opt(part);
            if (node == null) {
                throw new IllegalArgumentException("unresolvable $ref " + ref);
            }
        }
        return (JSONObject) node;
    }

    private void check(Object schemaNode, Object x, String path, List<String> errors) {
        if (schemaNode instanceof Boolean) {
            if (!(Boolean) schemaNode) {
                errors.add(path + ": not allowed");
            }
            return;
        }
        JSONObject s = (JSONObject) schemaNode;
        Iterator<String> keys = s.keys();
        while (keys.hasNext()) {
            String k = keys.next();
            if (!KEYWORDS.contains(k) && !ANNOTATIONS.contains(k)) {
                throw new IllegalArgumentException("schema keyword '" + k + "' at " + path + " is not supported by this validator");
            }
        }
        if (s.has("$ref")) {
            check(resolve(s.optString("$ref")), x, path, errors);
        }
        if (s.has("type") && !typeMatches(s.opt("type"), x)) {
            errors.add(path + ": " + describe(x) + " is not of type " + s.opt("type"));
            return;
        }
        if (s.has("const") && !deepEquals(s.opt("const"), x)) {
            errors.add(path + ": " + describe(x) + " is not " + s.opt("const"));
        }
        if (s.has("enum")) {
            JSONArray e = s.optJSONArray("enum");
            boolean found = false;
            for (int i = 0; i < e.length() && !found; i++) {
                found = deepEquals(e.opt(i), x);
            }
            if (!found) {
                errors.add(path + ": " + describe(x) + " is not one of " + e);
            }
        }
        if (x instanceof Number) {
            double v = ((Number) x).doubleValue();
            if (s.has("minimum") && v < s.optDouble("minimum")) {
                errors.add(path + ": " + v + " is less than the minimum " + s.optDouble("minimum"));
            }
            if (s.has("maximum") && v > s.optDouble("maximum")) {
                errors.add(path + ": " + v + " is more than the maximum " + s.optDouble("maximum"));
            }
            if (s.has("exclusiveMinimum") && v <= s.optDouble("exclusiveMinimum")) {
                errors.add(path + ": " + v + " is not above " + s.optDouble("exclusiveMinimum"));
            }
        }
        if (x instanceof String) {
            String str = (String) x;
            int len = str.codePointCount(0, str.length());
            if (s.has("minLength") && len < s.optInt("minLength")) {
                errors.add(path + ": '" + str + "' is shorter than " + s.optInt("minLength"));
            }
            if (s.has("maxLength") && len > s.optInt("maxLength")) {
                errors.add(path + ": '" + str + "' is longer than " + s.optInt("maxLength"));
            }
            if (s.has("pattern") && !Pattern.compile(s.optString("pattern")).matcher(str).find()) {
                errors.add(path + ": '" + str + "' does not match " + s.optString("pattern"));
            }
        }
        if (x instanceof JSONArray) {
            JSONArray a = (JSONArray) x;
            if (s.has("minItems") && a.length() < s.optInt("minItems")) {
                errors.add(path + ": fewer than " + s.optInt("minItems") + " items");
            }
            if (s.has("maxItems") && a.length() > s.optInt("maxItems")) {
                errors.add(path + ": more than " + s.optInt("maxItems") + " items");
            }
            if (s.optBoolean("uniqueItems", false)) {
                for (int i = 0; i < a.length(); i++) {
                    for (int j = i + 1; j < a.length(); j++) {
                        if (deepEquals(a.opt(i), a.opt(j))) {
                            errors.add(path + ": items " + i + " and " + j + " are equal");
                        }
                    }
                }
            }
            if (s.has("items")) {
                for (int i = 0; i < a.length(); i++) {
                    check(s.opt("items"), a.opt(i), path + "[" + i + "]", errors);
                }
            }
        }
        if (x instanceof JSONObject) {
            JSONObject o = (JSONObject) x;
            JSONArray req = s.optJSONArray("required");
            if (req != null) {
                for (int i = 0; i < req.length(); i++) {
                    if (!o.has(req.optString(i))) {
                        errors.add(path + ": required field '" + req.optString(i) + "' is missing");
                    }
                }
            }
            if (s.has("minProperties") && o.length() < s.optInt("minProperties")) {
                errors.add(path + ": fewer than " + s.optInt("minProperties") + " properties");
            }
            JSONObject props = s.optJSONObject("properties");
            Iterator<String> it = o.keys();
            while (it.hasNext()) {
                String k = it.next();
                if (s.has("propertyNames")) {
                    check(s.opt("propertyNames"), k, path + " key '" + k + "'", errors);
                }
                if (props != null && props.has(k)) {
                    check(props.opt(k), o.opt(k), path + "." + k, errors);
                } else if (s.has("additionalProperties")) {
                    check(s.opt("additionalProperties"), o.opt(k), path + "." + k, errors);
                }
            }
        }
        if (s.has("allOf")) {
            JSONArray all = s.optJSONArray("allOf");
            for (int i = 0; i < all.length(); i++) {
                check(all.opt(i), x, path, errors);
            }
        }
        if (s.has("oneOf")) {
            JSONArray one = s.optJSONArray("oneOf");
            int matches = 0;
            for (int i = 0; i < one.length(); i++) {
                List<String> sub = new ArrayList<>();
                check(one.opt(i), x, path, sub);
                if (sub.isEmpty()) {
                    matches++;
                }
            }
            if (matches != 1) {
                errors.add(path + ": matches " + matches + " of the oneOf alternatives, not exactly one");
            }
        }
        if (s.has("if")) {
            List<String> sub = new ArrayList<>();
            check(s.opt("if"), x, path, sub);
            if (sub.isEmpty() && s.has("then")) {
                check(s.opt("then"), x, path, errors);
            }
        }
    }

    private static boolean typeMatches(Object type, Object x) {
        if (type instanceof JSONArray) {
            JSONArray ts = (JSONArray) type;
            for (int i = 0; i < ts.length(); i++) {
                if (typeMatches(ts.optString(i), x)) {
                    return true;
                }
            }
            return false;
        }
        switch ((String) type) {
            case "object":
                return x instanceof JSONObject;
            case "array":
                return x instanceof JSONArray;
            case "string":
                return x instanceof String;
            case "boolean":
                return x instanceof Boolean;
            case "null":
                return x == null || x == JSONObject.NULL;
            case "number":
                return x instanceof Number;
            case "integer":
                return x instanceof Number && ((Number) x).doubleValue() == Math.rint(((Number) x).doubleValue());
            default:
                throw new IllegalArgumentException("unknown type " + type);
        }
    }

    private static boolean deepEquals(Object a, Object b) {
        if (a instanceof Number && b instanceof Number) {
            return ((Number) a).doubleValue() == ((Number) b).doubleValue();
        }
        if (a instanceof JSONArray && b instanceof JSONArray) {
            JSONArray x = (JSONArray) a;
            JSONArray y = (JSONArray) b;
            if (x.length() != y.length()) {
                return false;
            }
            for (int i = 0; i < x.length(); i++) {
                if (!deepEquals(x.opt(i), y.opt(i))) {
                    return false;
                }
            }
            return true;
        }
        if (a instanceof JSONObject && b instanceof JSONObject) {
            JSONObject x = (JSONObject) a;
            JSONObject y = (JSONObject) b;
            if (x.length() != y.length()) {
                return false;
            }
            Iterator<String> it = x.keys();
            while (it.hasNext()) {
                String k = it.next();
                if (!y.has(k) || !deepEquals(x.opt(k), y.opt(k))) {
                    return false;
                }
            }
            return true;
        }
        return a == null ? b == null : a.equals(b);
    }

    private static String describe(Object x) {
        String s = String.valueOf(x);
        return s.length() > 60 ? s.substring(0, 60) + "..." : s;
    }
}
