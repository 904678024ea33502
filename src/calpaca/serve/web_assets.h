// The web chat page's static files (web/*), compiled into the library by web/embed.cmake.
#pragma once
#include <span>
#include <string_view>

namespace calpaca::serve {

struct WebAsset {
    std::string_view path;          // "/index.html", "/app.js", ...
    std::string_view content_type;
    std::string_view data;
};

std::span<const WebAsset> web_assets();

}  // namespace calpaca::serve
