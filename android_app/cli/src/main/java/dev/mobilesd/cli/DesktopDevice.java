package dev.mobilesd.cli;

import dev.mobilesd.benchmark.DeviceInfo;
import dev.mobilesd.runtime.Accelerator;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The desktop machine as a latency report's device: it says plainly that this is not a phone. */
final class DesktopDevice {
    static final String TOOL = "mobilesd Android app core " + Version.VERSION + " (desktop JVM CLI)";
    private static final Pattern ADAPTER = Pattern.compile("Selected adapter: (.+?), arch=([^,]*)");

    private DesktopDevice() {
    }

    static String cpuModel() {
        try {
            for (String line : Files.readAllLines(Paths.get("/proc/cpuinfo"), StandardCharsets.UTF_8)) {
                if (line.toLowerCase(java.util.Locale.ROOT).startsWith("model name")) {
                    return line.substring(line.indexOf(':') + 1).trim();
                }
            }
        } catch (IOException e) {
            // fall through
        }
        return System.getProperty("os.arch");
    }

    /** The WebGPU adapter LiteRT picked, from its log ("Selected adapter: llvmpipe (...), arch=software"), or null. */
    static String adapterFromLog(String log) {
        Matcher m = ADAPTER.matcher(log);
        return m.find() ? m.group(1).trim() + " (" + m.group(2).trim() + ")" : null;
    }

    static DeviceInfo describe(Accelerator accelerator, String adapter) {
        String cpu = cpuModel();
        String jvm = System.getProperty("java.vm.name", "JVM") + " " + System.getProperty("java.version", "");
        String os = System.getProperty("os.name", "Linux") + " " + System.getProperty("os.version", "");
        String acceleratorName;
        String what;
        if (accelerator == Accelerator.GPU) {
            acceleratorName = "LiteRT WebGPU accelerator on " + (adapter != null ? adapter : "an unidentified adapter");
            what = "GPU here means LiteRT's WebGPU accelerator on this machine's Vulkan device"
                    + (adapter != null && adapter.contains("llvmpipe") ? " (Mesa lavapipe, a software rasterizer on the CPU)" : "")
                    + ": it proves op coverage and numerics, its timings say nothing about a phone GPU.";
        } else {
            acceleratorName = System.getProperty("os.arch") + " CPU (LiteRT XNNPACK)";
            what = "CPU here means LiteRT's XNNPACK CPU path on this host.";
        }
        String note = "Not a phone: the Android app's Java core on a desktop JVM (" + jvm.trim() + ", " + os.trim() + ", "
                + cpu + ") calling LiteRT's C API (libLiteRt.so) through JNA, the same code the app runs. " + what;
        return new DeviceInfo("desktop JVM (" + cpu + "), not a phone", null, os.trim(), cpu, acceleratorName, 0, null,
                TOOL, note);
    }
}
