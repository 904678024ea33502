// Noticing that an HTTP client went away while its request is still being generated.
//
// cpp-httplib hands a handler the request but not its socket. find_connection() recovers the
// socket from the connection's addresses (this process's open sockets are few); peer_closed()
// then says whether the client has closed its end, without reading anything.
#pragma once
#include <string>

namespace calpaca::serve {

// The socket of this process connected from remote_addr:remote_port to local_port, or -1.
int find_connection(const std::string& remote_addr, int remote_port, int local_port);

// True when the peer of `fd` has closed or reset the connection (false for fd < 0).
bool peer_closed(int fd);

}  // namespace calpaca::serve
