// Build identity: version and git revision, compiled into one generated file so a new revision rebuilds one object.
#pragma once

namespace gt {

const char* version();       // "0.1.0"
const char* git_revision();  // "b491f65" or "b491f65-dirty"; "unknown" outside a git checkout

}  // namespace gt
