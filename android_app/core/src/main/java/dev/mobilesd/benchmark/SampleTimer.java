package dev.mobilesd.benchmark;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import dev.mobilesd.json.Json;
import org.json.JSONArray;
import org.json.JSONObject;

/**
 * Timed samples of one stage and their statistics (Apple's {@code SampleTimer}), computed as the host's
 * {@code mobilesd.latency.schema.stage_stats} does: median, mean, sample standard deviation, and p90 as
 * Python's {@code statistics.quantiles(n=10, method="inclusive")[-1]}.
 */
public final class SampleTimer {
    private final List<Double> samples = new ArrayList<>();
    private long startedAt = -1;

    public void start() {
        startedAt = System.nanoTime();
    }

    /** Stops the running sample and records it; returns its seconds. */
    public double stop() {
        if (startedAt < 0) {
            throw new IllegalStateException("stop() without start()");
        }
        double s = (System.nanoTime() - startedAt) / 1e9;
        startedAt = -1;
        samples.add(s);
        return s;
    }

    public void add(double seconds) {
        samples.add(seconds);
    }

    public int count() {
        return samples.size();
    }

    public List<Double> samples() {
        return Collections.unmodifiableList(samples);
    }

    private List<Double> sorted() {
        List<Double> s = new ArrayList<>(samples);
        Collections.sort(s);
        return s;
    }

    public double median() {
        return median(samples);
    }

    public static double median(List<Double> xs) {
        if (xs.isEmpty()) {
            throw new IllegalStateException("no samples");
        }
        List<Double> s = new ArrayList<>(xs);
        Collections.sort(s);
        int n = s.size();
        return n % 2 == 1 ? s.get(n / 2) : (s.get(n / 2 - 1) + s.get(n / 2)) / 2;
    }

    public double mean() {
        double sum = 0;
        for (double x : samples) {
            sum += x;
        }
        return sum / samples.size();
    }

    public double stdev() {
        int n = samples.size();
        if (n < 2) {
            return 0;
        }
        double m = mean();
        double ss = 0;
        for (double x : samples) {
            ss += (x - m) * (x - m);
        }
        return Math.sqrt(ss / (n - 1));
    }

    public double min() {
        return sorted().get(0);
    }

    public double max() {
        List<Double> s = sorted();
        return s.get(s.size() - 1);
    }

    /** The 90th percentile, "inclusive" method (linear between order statistics); needs two samples. */
    public double p90() {
        List<Double> s = sorted();
        int n = s.size();
        int m = n - 1;
        int j = (9 * m) / 10;
        int delta = (9 * m) % 10;
        return (s.get(j) * (10 - delta) + s.get(j + 1) * delta) / 10;
    }

    /** The latency report's stage object. */
    public JSONObject toStageJson(int callsPerRun) {
        JSONObject o = new JSONObject();
        Json.put(o, "median_s", median());
        Json.put(o, "samples_s", new JSONArray(samples));
        Json.put(o, "min_s", min());
        Json.put(o, "max_s", max());
        Json.put(o, "mean_s", mean());
        Json.put(o, "stdev_s", stdev());
        if (samples.size() >= 2) {
            Json.put(o, "p90_s", p90());
        }
        if (callsPerRun > 0) {
            Json.put(o, "calls_per_run", callsPerRun);
        }
        return o;
    }
}
