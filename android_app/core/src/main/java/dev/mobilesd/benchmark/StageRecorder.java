package dev.mobilesd.benchmark;

import dev.mobilesd.pipeline.StageListener;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Records one generation's stage timings (the host's {@code RunRecorder}): chunk times are summed per step
 * (sequential CFG calls every chunk twice per step), one entry per unet_step.
 */
public final class StageRecorder implements StageListener {
    final Map<String, List<Double>> stages = new LinkedHashMap<>();
    final List<Double> steps = new ArrayList<>();
    final List<Map<Integer, Double>> stepChunks = new ArrayList<>();
    private Map<Integer, Double> openChunks = new HashMap<>();

    @Override
    public void onStage(String name, double seconds) {
        if (name.startsWith("unet_chunk_")) {
            int i = Integer.parseInt(name.substring("unet_chunk_".length()));
            openChunks.merge(i, seconds, Double::sum);
        } else if (name.equals("unet_step")) {
            steps.add(seconds);
            stepChunks.add(openChunks);
            openChunks = new HashMap<>();
        } else {
            stages.computeIfAbsent(name, k -> new ArrayList<>()).add(seconds);
        }
    }

    public List<Double> stepSeconds() {
        return steps;
    }

    public double stage(String name) {
        List<Double> s = stages.get(name);
        return s == null ? Double.NaN : s.get(s.size() - 1);
    }
}
