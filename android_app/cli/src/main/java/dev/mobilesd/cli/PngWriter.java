package dev.mobilesd.cli;

import dev.mobilesd.pipeline.GeneratedImage;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Path;
import javax.imageio.ImageIO;

/** Writes a generated image as an RGB PNG (javax.imageio; the Android app uses Bitmap.compress instead). */
final class PngWriter {
    private PngWriter() {
    }

    static void write(GeneratedImage image, Path out) {
        BufferedImage img = new BufferedImage(image.width, image.height, BufferedImage.TYPE_INT_RGB);
        img.setRGB(0, 0, image.width, image.height, image.argb(), 0, image.width);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try {
            if (!ImageIO.write(img, "png", bytes)) {
                throw new IllegalStateException("no PNG writer in this JVM");
            }
        } catch (IOException e) {
            throw new IllegalStateException("PNG encoding failed", e);
        }
        dev.mobilesd.AtomicFiles.write(out, bytes.toByteArray());   // temporary sibling, then rename: no partial PNG
    }
}
