// Loss curves of a train_log.csv (written by the trainer) as a PNG: training loss per step (blue)
// and eval loss (red dots joined), with axes, tick labels and a legend. Written atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace calpaca {

void plot_loss_png(const std::string& csv_path, const std::string& png_path);

// RGB image helpers (exposed for tests): a w x h canvas and the PNG encoder (libpng).
struct Canvas {
    int w = 0, h = 0;
    std::vector<uint8_t> rgb;
    Canvas(int width, int height);
    void set(int x, int y, uint32_t color);
    void line(double x0, double y0, double x1, double y1, uint32_t color, int thickness = 1);
    void rect(int x0, int y0, int x1, int y1, uint32_t color);
    void text(int x, int y, const std::string& s, uint32_t color, int scale = 1);  // 5x7 glyphs, top-left origin
    static int text_width(const std::string& s, int scale = 1);
};
void write_png(const Canvas& c, const std::string& path);

}  // namespace calpaca
