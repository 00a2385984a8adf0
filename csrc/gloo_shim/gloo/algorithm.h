// See README: a stand-in for gloo's header, declaring what ProcessGroupGloo.hpp names.
#pragma once
#include "gloo/context.h"
