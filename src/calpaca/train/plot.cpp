#include "calpaca/train/plot.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"

namespace calpaca {

namespace {

// 5x7 glyphs, one byte per row (bit 4 = leftmost column).
struct Glyph {
    char c;
    uint8_t rows[7];
};
constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {' ', {0, 0, 0, 0, 0, 0, 0}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}}, {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
    {'p', {0x00, 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10}}, {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}}, {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
};

const Glyph* glyph(char c) {
    for (const Glyph& g : kFont)
        if (g.c == c) return &g;
    return nullptr;
}

struct Row {
    double step = 0, loss = NAN, eval = NAN;
};

std::vector<Row> read_log(const std::string& path) {
    std::istringstream in(read_file(path));
    std::string line;
    if (!std::getline(in, line) || line.rfind("step,", 0) != 0)
        fail("{}: not a calpaca training log (expected a header starting with 'step,')", path);
    std::vector<std::string> header;
    {
        std::stringstream hs(line);
        std::string col;
        while (std::getline(hs, col, ',')) header.push_back(col);
    }
    auto col_of = [&](const char* name) {
        for (size_t i = 0; i < header.size(); ++i)
            if (header[i] == name) return static_cast<int>(i);
        fail("{}: no '{}' column", path, name);
    };
    const int c_loss = col_of("loss"), c_eval = col_of("eval_loss");
    std::vector<Row> rows;
    size_t line_no = 1;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty()) continue;
        std::vector<std::string> f;
        std::stringstream ls(line);
        std::string cell;
        while (std::getline(ls, cell, ',')) f.push_back(cell);
        while (f.size() < header.size()) f.push_back("");
        Row r;
        char* end = nullptr;
        r.step = std::strtod(f[0].c_str(), &end);
        if (f[0].empty() || *end) fail("{}: line {}: bad step '{}'", path, line_no, f[0]);
        if (!f[c_loss].empty()) r.loss = std::strtod(f[c_loss].c_str(), nullptr);
        if (!f[c_eval].empty()) r.eval = std::strtod(f[c_eval].c_str(), nullptr);
        rows.push_back(r);
    }
    if (rows.empty()) fail("{}: no rows to plot", path);
    return rows;
}

std::string tick_label(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4g", v);
    return b;
}

}  // namespace

Canvas::Canvas(int width, int height) : w(width), h(height), rgb(static_cast<size_t>(width * height * 3), 255) {}

void Canvas::set(int x, int y, uint32_t c) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t* p = &rgb[static_cast<size_t>((y * w + x) * 3)];
    p[0] = static_cast<uint8_t>(c >> 16);
    p[1] = static_cast<uint8_t>(c >> 8);
    p[2] = static_cast<uint8_t>(c);
}

void Canvas::line(double x0, double y0, double x1, double y1, uint32_t c, int thickness) {
    const int n = static_cast<int>(std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0)))) + 1;
    for (int i = 0; i <= n; ++i) {
        const double t = static_cast<double>(i) / n;
        const int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t)), y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
        for (int dy = 0; dy < thickness; ++dy)
            for (int dx = 0; dx < thickness; ++dx) set(x + dx - thickness / 2, y + dy - thickness / 2, c);
    }
}

void Canvas::rect(int x0, int y0, int x1, int y1, uint32_t c) {
    for (int y = y0; y <= y1; ++y)
        for (int x = x0; x <= x1; ++x) set(x, y, c);
}

int Canvas::text_width(const std::string& s, int scale) { return static_cast<int>(s.size()) * 6 * scale; }

void Canvas::text(int x, int y, const std::string& s, uint32_t c, int scale) {
    for (size_t k = 0; k < s.size(); ++k) {
        const Glyph* g = glyph(s[k]);
        if (!g) continue;
        for (int r = 0; r < 7; ++r)
            for (int col = 0; col < 5; ++col)
                if (g->rows[r] & (0x10 >> col))
                    rect(x + (static_cast<int>(k) * 6 + col) * scale, y + r * scale,
                         x + (static_cast<int>(k) * 6 + col) * scale + scale - 1, y + r * scale + scale - 1, c);
    }
}

void write_png(const Canvas& c, const std::string& path) {
    AtomicFile out(path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    if (!png) fail("{}: cannot initialise libpng", path);
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fail("{}: libpng failed to encode the image", path);
    }
    png_set_write_fn(
        png, &out, [](png_structp p, png_bytep data, png_size_t n) { static_cast<AtomicFile*>(png_get_io_ptr(p))->write(data, n); },
        nullptr);
    png_set_IHDR(png, info, static_cast<png_uint_32>(c.w), static_cast<png_uint_32>(c.h), 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < c.h; ++y) png_write_row(png, const_cast<png_bytep>(&c.rgb[static_cast<size_t>(y * c.w * 3)]));
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    out.commit();
}

void plot_loss_png(const std::string& csv_path, const std::string& png_path) {
    const std::vector<Row> rows = read_log(csv_path);
    double x0 = rows.front().step, x1 = rows.back().step, y0 = INFINITY, y1 = -INFINITY;
    for (const Row& r : rows)
        for (double v : {r.loss, r.eval})
            if (std::isfinite(v)) y0 = std::min(y0, v), y1 = std::max(y1, v);
    if (!std::isfinite(y0)) fail("{}: no loss values to plot", csv_path);
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
    const double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
    const int W = 900, H = 540, L = 80, R = 30, T = 40, B = 60;
    Canvas c(W, H);
    auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
    const uint32_t grid = 0xE0E0E0, axis = 0x303030, blue = 0x1F62C8, red = 0xD02020;
    for (int i = 0; i <= 5; ++i) {
        const double xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
        c.line(px(xv), T, px(xv), H - B, grid);
        c.line(L, py(yv), W - R, py(yv), grid);
        const std::string xl = tick_label(std::round(xv)), yl = tick_label(yv);
        c.text(static_cast<int>(px(xv)) - Canvas::text_width(xl) / 2, H - B + 8, xl, axis);
        c.text(L - 8 - Canvas::text_width(yl), static_cast<int>(py(yv)) - 3, yl, axis);
    }
    c.line(L, T, L, H - B, axis, 2);
    c.line(L, H - B, W - R, H - B, axis, 2);
    c.text(W / 2 - Canvas::text_width("step", 2) / 2, H - 28, "step", axis, 2);
    c.text(10, T - 30, "loss", axis, 2);
    const Row* prev = nullptr;
    for (const Row& r : rows) {
        if (!std::isfinite(r.loss)) continue;
        if (prev) c.line(px(prev->step), py(prev->loss), px(r.step), py(r.loss), blue, 2);
        prev = &r;
    }
    if (rows.size() == 1 && std::isfinite(rows[0].loss)) c.rect(static_cast<int>(px(rows[0].step)) - 2, static_cast<int>(py(rows[0].loss)) - 2, static_cast<int>(px(rows[0].step)) + 2, static_cast<int>(py(rows[0].loss)) + 2, blue);
    prev = nullptr;
    bool any_eval = false;
    for (const Row& r : rows) {
        if (!std::isfinite(r.eval)) continue;
        any_eval = true;
        if (prev) c.line(px(prev->step), py(prev->eval), px(r.step), py(r.eval), red, 2);
        const int cx = static_cast<int>(px(r.step)), cy = static_cast<int>(py(r.eval));
        c.rect(cx - 3, cy - 3, cx + 3, cy + 3, red);
        prev = &r;
    }
    const int lx = W - R - 150;
    c.rect(lx, T + 4, lx + 20, T + 7, blue);
    c.text(lx + 28, T, "train loss", axis, 1);
    if (any_eval) {
        c.rect(lx, T + 20, lx + 20, T + 23, red);
        c.text(lx + 28, T + 16, "eval loss", axis, 1);
    }
    write_png(c, png_path);
}

}  // namespace calpaca
