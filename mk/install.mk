# mk/install.mk — `make install` / `make uninstall` and the install test (STYLE rules 36-38).
#
#   make install   [PREFIX=/usr/local] [DESTDIR=]   lib/libpsv.so.X.Y.Z (+ SONAME and dev symlinks),
#                                                   lib/libpsv.a, include/psv.h, include/psv.hpp,
#                                                   lib/pkgconfig/psv.pc and psv-static.pc,
#                                                   lib/cmake/psv/psvConfig.cmake (+ version file:
#                                                   find_package(psv), targets psv::psv and
#                                                   psv::psv_static), bin/psv (if built)
#   make uninstall [PREFIX=/usr/local] [DESTDIR=]   removes exactly those files
#   make test-install                               runs the README's install lines (pkg-config,
#                                                   static, CMake) in a scratch HOME, checks the
#                                                   installed tree, uninstall and DESTDIR
#
# Installed libraries and bin/psv are stripped of debug info (`strip --strip-debug`: symbols stay,
# so backtraces keep function names); the build in target/release keeps its debug info.

PREFIX     ?= /usr/local
STRIP      ?= strip
DESTDIR    ?=
bindir     ?= $(PREFIX)/bin
libdir     ?= $(PREFIX)/lib
includedir ?= $(PREFIX)/include
pkgconfigdir ?= $(libdir)/pkgconfig
cmakedir   ?= $(libdir)/cmake/psv
INSTALL    ?= install
CXX        ?= g++

# The package version, read from the [package] table of Cargo.toml (never from a dependency line).
PSV_PKG_VERSION := $(shell awk -F'"' '/^\[/ { p = ($$0 == "[package]") } p && /^version[ \t]*=/ { print $$2; exit }' Cargo.toml)
PSV_PKG_DESCRIPTION := $(shell awk -F'"' '/^\[/ { p = ($$0 == "[package]") } p && /^description[ \t]*=/ { print $$2; exit }' Cargo.toml)
PSV_PKG_MAJOR := $(word 1,$(subst ., ,$(PSV_PKG_VERSION)))
PSV_PKG_MINOR := $(word 2,$(subst ., ,$(PSV_PKG_VERSION)))
PSV_PKG_PATCH := $(word 3,$(subst ., ,$(PSV_PKG_VERSION)))
# SONAME version as cargo-c and build.rs compute it: 0.y.z -> 0.y, x.y.z -> x.
PSV_SOVER := $(if $(filter 0,$(PSV_PKG_MAJOR)),0.$(PSV_PKG_MINOR),$(PSV_PKG_MAJOR))

ifeq ($(strip $(PSV_PKG_VERSION)),)
$(error mk/install.mk: no version = "..." in the [package] table of Cargo.toml)
endif

PSV_SO_FULL  := libpsv.so.$(PSV_PKG_VERSION)
PSV_SO_SONAME := libpsv.so.$(PSV_SOVER)

# (In-tree runs: build.rs links target/release/$(PSV_SO_SONAME) -> libpsv.so, so a program linked
# with -L$(LIBDIR) -lpsv, whose NEEDED entry is the SONAME, finds it through an rpath.)

# What a static link needs besides libpsv.a, as rustc reports it; cached because asking costs a
# (staticlib-only) rebuild of the crate when it is stale.
PSV_NATIVE_STATIC_LIBS_FILE := $(BUILD)/native-static-libs.txt

$(PSV_NATIVE_STATIC_LIBS_FILE): Cargo.toml Cargo.lock build.rs | $(BUILD)
	$(CARGO) rustc --release --lib --crate-type staticlib -- --print native-static-libs > $@.log 2>&1 \
		|| { cat $@.log; exit 1; }
	sed -n 's/^note: native-static-libs: //p' $@.log | tail -n 1 > $@.tmp
	test -s $@.tmp || { echo "mk/install.mk: rustc printed no native-static-libs line" >&2; cat $@.log; exit 1; }
	mv $@.tmp $@

# The @...@ values of psv.pc.in, psv-static.pc.in and cmake/*.cmake.in.
PSV_FILL = sed -e 's|@PREFIX@|$(PREFIX)|g' \
	    -e 's|@LIBDIR@|$(libdir)|g' \
	    -e 's|@INCLUDEDIR@|$(includedir)|g' \
	    -e 's|@VERSION@|$(PSV_PKG_VERSION)|g' \
	    -e 's|@MAJOR@|$(PSV_PKG_MAJOR)|g' \
	    -e 's|@MINOR@|$(PSV_PKG_MINOR)|g' \
	    -e 's|@SOVER@|$(PSV_SOVER)|g' \
	    -e 's|@DESCRIPTION@|$(PSV_PKG_DESCRIPTION)|g' \
	    -e "s|@LIBS_PRIVATE@|$$(cat $(PSV_NATIVE_STATIC_LIBS_FILE))|g" \
	    -e "s|@LIBS_PRIVATE_CMAKE@|$$(sed -e 's/^ *-l//' -e 's/ *-l/;/g' $(PSV_NATIVE_STATIC_LIBS_FILE))|g" \
	    -e "s|@CMAKE_TO_INCLUDEDIR@|$$(realpath -m --relative-to='$(cmakedir)' '$(includedir)')|g"

$(BUILD)/psv.pc: psv.pc.in $(PSV_NATIVE_STATIC_LIBS_FILE) Cargo.toml FORCE | $(BUILD)
	$(PSV_FILL) psv.pc.in > $@

$(BUILD)/psv-static.pc: psv-static.pc.in $(PSV_NATIVE_STATIC_LIBS_FILE) Cargo.toml FORCE | $(BUILD)
	$(PSV_FILL) psv-static.pc.in > $@

$(BUILD)/psvConfig.cmake: cmake/psvConfig.cmake.in $(PSV_NATIVE_STATIC_LIBS_FILE) Cargo.toml FORCE | $(BUILD)
	$(PSV_FILL) cmake/psvConfig.cmake.in > $@

$(BUILD)/psvConfigVersion.cmake: cmake/psvConfigVersion.cmake.in Cargo.toml FORCE | $(BUILD)
	$(PSV_FILL) cmake/psvConfigVersion.cmake.in > $@

.PHONY: install uninstall test-install FORCE
FORCE:

# `make install` builds first; `make PSV_NO_BUILD=1 install` (e.g. under sudo after a user's
# `make lib`) installs what target/release already holds without running cargo.
PSV_INSTALL_BUILD := $(if $(PSV_NO_BUILD),,lib)

PSV_INSTALL_GENERATED := $(BUILD)/psv.pc $(BUILD)/psv-static.pc $(BUILD)/psvConfig.cmake \
	$(BUILD)/psvConfigVersion.cmake

install: $(PSV_INSTALL_BUILD) $(PSV_INSTALL_GENERATED)
	@test -f $(LIBDIR)/libpsv.so -a -f $(LIBDIR)/libpsv.a \
		|| { echo "install: build first (make lib): $(LIBDIR)/libpsv.{so,a} missing" >&2; exit 1; }
	$(INSTALL) -d '$(DESTDIR)$(libdir)' '$(DESTDIR)$(includedir)' '$(DESTDIR)$(pkgconfigdir)' \
		'$(DESTDIR)$(cmakedir)'
	$(INSTALL) -m 755 $(LIBDIR)/libpsv.so '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)'
	$(STRIP) --strip-debug '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)'
	ln -sf $(PSV_SO_FULL) '$(DESTDIR)$(libdir)/$(PSV_SO_SONAME)'
	ln -sf $(PSV_SO_SONAME) '$(DESTDIR)$(libdir)/libpsv.so'
	$(INSTALL) -m 644 $(LIBDIR)/libpsv.a '$(DESTDIR)$(libdir)/libpsv.a'
	$(STRIP) --strip-debug '$(DESTDIR)$(libdir)/libpsv.a'
	$(INSTALL) -m 644 include/psv.h include/psv.hpp '$(DESTDIR)$(includedir)/'
	$(INSTALL) -m 644 $(BUILD)/psv.pc $(BUILD)/psv-static.pc '$(DESTDIR)$(pkgconfigdir)/'
	$(INSTALL) -m 644 $(BUILD)/psvConfig.cmake $(BUILD)/psvConfigVersion.cmake '$(DESTDIR)$(cmakedir)/'
	if [ -f $(LIBDIR)/psv ]; then \
		$(INSTALL) -d '$(DESTDIR)$(bindir)' && \
		$(INSTALL) -m 755 $(LIBDIR)/psv '$(DESTDIR)$(bindir)/psv' && \
		$(STRIP) --strip-debug '$(DESTDIR)$(bindir)/psv'; \
	fi
	@if command -v readelf >/dev/null 2>&1; then \
		readelf -d '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)' | grep -q 'Library soname: \[$(PSV_SO_SONAME)\]' \
		|| { echo "install: $(PSV_SO_FULL) does not have SONAME $(PSV_SO_SONAME)" >&2; exit 1; }; \
	fi

uninstall:
	rm -f '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)' '$(DESTDIR)$(libdir)/$(PSV_SO_SONAME)' \
	      '$(DESTDIR)$(libdir)/libpsv.so' '$(DESTDIR)$(libdir)/libpsv.a' \
	      '$(DESTDIR)$(includedir)/psv.h' '$(DESTDIR)$(includedir)/psv.hpp' \
	      '$(DESTDIR)$(pkgconfigdir)/psv.pc' '$(DESTDIR)$(pkgconfigdir)/psv-static.pc' \
	      '$(DESTDIR)$(cmakedir)/psvConfig.cmake' '$(DESTDIR)$(cmakedir)/psvConfigVersion.cmake' \
	      '$(DESTDIR)$(bindir)/psv'
	-rmdir '$(DESTDIR)$(cmakedir)' 2>/dev/null

# Debian's cmake for the find_package(psv) test, installed if missing (root or sudo), as
# mk/luajit.mk does for luajit.
.PHONY: cmake-installed
cmake-installed:
	@command -v cmake >/dev/null 2>&1 || { \
		echo "test-install: installing Debian's cmake"; \
		$(PSV_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(PSV_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null; }
	@command -v cmake >/dev/null 2>&1 || { echo "test-install: no cmake after apt-get install" >&2; exit 1; }

test-install: lib cmake-installed $(PSV_NATIVE_STATIC_LIBS_FILE)
	MAKE='$(MAKE)' CC='$(CC)' CXX='$(CXX)' PSV_VERSION='$(PSV_PKG_VERSION)' PSV_SOVER='$(PSV_SOVER)' \
		sh tests/install/test_install.sh '$(abspath $(BUILD))/test-install'

TEST_TARGETS += test-install
