package dev.mobilesd.cli;

import dev.mobilesd.MobileSdException;
import java.util.HashMap;
import java.util.Map;

/**
 * The CLI's flags: those of {@code mobilesd generate} / {@code mobilesd app android}. A small parser written out
 * rather than a library: users reach this CLI through {@code mobilesd app android} (argparse does the user-facing
 * parsing and help there), and the core's only dependencies stay JNA and org.json.
 */
final class CliArguments {
    static final String USAGE = "usage: java -jar mobilesd-android.jar --bundle B --prompt P [--negative-prompt N] "
            + "[--steps N] [--guidance G] [--seed S] [--scheduler dpm|euler|ddim|lcm] [--out image.png] "
            + "[--report r.json --warmup W --repeats R] [--accelerator gpu|cpu] [--allow-cpu-fallback] [--low-memory] "
            + "[--litert-lib PATH] [--litert-dir DIR] [--runtime-version V] [--result r.json] [--native-log FILE]";
    private static final String[] VALUED = {"--bundle", "--prompt", "--negative-prompt", "--steps", "--guidance", "--seed",
        "--scheduler", "--out", "--report", "--warmup", "--repeats", "--accelerator", "--litert-lib", "--litert-dir",
        "--runtime-version", "--result", "--native-log"};
    private static final String[] FLAGS = {"--allow-cpu-fallback", "--low-memory", "--quiet"};
    private final Map<String, String> values = new HashMap<>();

    CliArguments(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String key = a;
            String value = null;
            int eq = a.indexOf('=');
            if (a.startsWith("--") && eq > 0) {
                key = a.substring(0, eq);
                value = a.substring(eq + 1);
            }
            if (contains(FLAGS, key) && value == null) {
                values.put(key, "true");
            } else if (contains(VALUED, key)) {
                if (value == null) {
                    if (i + 1 >= args.length) {
                        throw new MobileSdException(key + " needs a value", USAGE);
                    }
                    value = args[++i];
                }
                values.put(key, value);
            } else {
                throw new MobileSdException("unknown argument '" + a + "'", USAGE);
            }
        }
        for (String required : new String[] {"--bundle", "--prompt"}) {
            if (!values.containsKey(required)) {
                throw new MobileSdException(required + " is required", USAGE);
            }
        }
    }

    private static boolean contains(String[] xs, String x) {
        for (String s : xs) {
            if (s.equals(x)) {
                return true;
            }
        }
        return false;
    }

    String get(String key) {
        return values.get(key);
    }

    String get(String key, String fallback) {
        return values.getOrDefault(key, fallback);
    }

    boolean flag(String key) {
        return values.containsKey(key);
    }

    int integer(String key, int fallback) {
        String v = values.get(key);
        if (v == null) {
            return fallback;
        }
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            throw new MobileSdException(key + " " + v + " is not an integer", "pass e.g. " + key + " " + fallback);
        }
    }

    long longValue(String key, long fallback) {
        String v = values.get(key);
        if (v == null) {
            return fallback;
        }
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new MobileSdException(key + " " + v + " is not an integer", "pass e.g. " + key + " 0");
        }
    }

    double number(String key, double fallback) {
        String v = values.get(key);
        if (v == null) {
            return fallback;
        }
        try {
            double d = Double.parseDouble(v);
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                throw new NumberFormatException();
            }
            return d;
        } catch (NumberFormatException e) {
            throw new MobileSdException(key + " " + v + " is not a finite number", "pass e.g. " + key + " 7.5");
        }
    }
}
