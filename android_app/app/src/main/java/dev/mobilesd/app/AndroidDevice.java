package dev.mobilesd.app;

import android.os.Build;
import dev.mobilesd.benchmark.DeviceInfo;

/** This phone as a latency report's device (android.os.Build). */
final class AndroidDevice {
    private AndroidDevice() {
    }

    static DeviceInfo describe(boolean gpu) {
        String soc = Build.VERSION.SDK_INT >= 31 ? Build.SOC_MANUFACTURER + " " + Build.SOC_MODEL : Build.HARDWARE;
        String name = Build.MANUFACTURER + " " + Build.MODEL;
        return new DeviceInfo(name, Build.MODEL, "Android " + Build.VERSION.RELEASE, soc,
                gpu ? "LiteRT GPU accelerator" : "LiteRT XNNPACK (CPU)", Runtime.getRuntime().availableProcessors(), null,
                "mobilesd Android " + BuildConfig.VERSION_NAME + " (" + BuildConfig.VERSION_CODE + ")",
                "Measured by the mobilesd sample app on the phone.");
    }
}
