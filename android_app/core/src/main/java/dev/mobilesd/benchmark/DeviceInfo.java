package dev.mobilesd.benchmark;

/**
 * The machine a report was measured on ({@code device} and {@code measured_by} of the latency report). The
 * app fills it from {@code android.os.Build}; the desktop CLI says plainly that it is not a phone.
 */
public final class DeviceInfo {
    public final String name;
    public final String model;
    public final String os;
    public final String soc;
    public final String acceleratorName;
    public final int cpuThreads;
    /** A key of mobilesd/latency/devices.json, or null. */
    public final String deviceKey;
    /** measured_by.tool */
    public final String tool;
    /** A sentence for the report's notes: what this run is (e.g. "the app core on a desktop JVM, not a phone"). */
    public final String note;

    public DeviceInfo(String name, String model, String os, String soc, String acceleratorName, int cpuThreads,
                      String deviceKey, String tool, String note) {
        this.name = name;
        this.model = model;
        this.os = os;
        this.soc = soc;
        this.acceleratorName = acceleratorName;
        this.cpuThreads = cpuThreads;
        this.deviceKey = deviceKey;
        this.tool = tool;
        this.note = note;
    }
}
