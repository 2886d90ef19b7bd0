# mk/install.mk — `make install` / `make uninstall` and the install test (STYLE rules 36-38).
#
#   make install   [PREFIX=/usr/local] [DESTDIR=]   lib/libpsv.so.X.Y.Z (+ SONAME and dev symlinks),
#                                                   lib/libpsv.a, include/psv.h, include/psv.hpp,
#                                                   lib/pkgconfig/psv.pc, bin/psv (if built)
#   make uninstall [PREFIX=/usr/local] [DESTDIR=]   removes exactly those files
#   make test-install                               installs into a scratch prefix and builds the
#                                                   C and C++ examples with nothing but pkg-config

PREFIX     ?= /usr/local
DESTDIR    ?=
bindir     ?= $(PREFIX)/bin
libdir     ?= $(PREFIX)/lib
includedir ?= $(PREFIX)/include
pkgconfigdir ?= $(libdir)/pkgconfig
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

# In-tree runs: whatever links with -L$(LIBDIR) -lpsv records NEEDED $(PSV_SO_SONAME) (the SONAME
# build.rs sets), so target/release needs that name too, as an installed lib/ has. Added as a
# prerequisite of `lib` (it runs before cargo; a link that dangles until the build is harmless).
.PHONY: psv-soname-link
lib: psv-soname-link
psv-soname-link:
	@mkdir -p $(LIBDIR) && ln -sfn libpsv.so $(LIBDIR)/$(PSV_SO_SONAME)

# What a static link needs besides libpsv.a, as rustc reports it; cached because asking costs a
# (staticlib-only) rebuild of the crate when it is stale.
PSV_NATIVE_STATIC_LIBS_FILE := $(BUILD)/native-static-libs.txt

$(PSV_NATIVE_STATIC_LIBS_FILE): Cargo.toml Cargo.lock build.rs | $(BUILD)
	$(CARGO) rustc --release --lib --crate-type staticlib -- --print native-static-libs > $@.log 2>&1 \
		|| { cat $@.log; exit 1; }
	sed -n 's/^note: native-static-libs: //p' $@.log | tail -n 1 > $@.tmp
	test -s $@.tmp || { echo "mk/install.mk: rustc printed no native-static-libs line" >&2; cat $@.log; exit 1; }
	mv $@.tmp $@

$(BUILD)/psv.pc: psv.pc.in $(PSV_NATIVE_STATIC_LIBS_FILE) Cargo.toml FORCE | $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' \
	    -e 's|@LIBDIR@|$(libdir)|g' \
	    -e 's|@INCLUDEDIR@|$(includedir)|g' \
	    -e 's|@VERSION@|$(PSV_PKG_VERSION)|g' \
	    -e 's|@DESCRIPTION@|$(PSV_PKG_DESCRIPTION)|g' \
	    -e "s|@LIBS_PRIVATE@|$$(cat $(PSV_NATIVE_STATIC_LIBS_FILE))|g" \
	    psv.pc.in > $@

.PHONY: install uninstall test-install FORCE
FORCE:

# `make install` builds first; `make PSV_NO_BUILD=1 install` (e.g. under sudo after a user's
# `make lib`) installs what target/release already holds without running cargo.
PSV_INSTALL_BUILD := $(if $(PSV_NO_BUILD),,lib)

install: $(PSV_INSTALL_BUILD) $(BUILD)/psv.pc
	@test -f $(LIBDIR)/libpsv.so -a -f $(LIBDIR)/libpsv.a \
		|| { echo "install: build first (make lib): $(LIBDIR)/libpsv.{so,a} missing" >&2; exit 1; }
	$(INSTALL) -d '$(DESTDIR)$(libdir)' '$(DESTDIR)$(includedir)' '$(DESTDIR)$(pkgconfigdir)'
	$(INSTALL) -m 755 $(LIBDIR)/libpsv.so '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)'
	ln -sf $(PSV_SO_FULL) '$(DESTDIR)$(libdir)/$(PSV_SO_SONAME)'
	ln -sf $(PSV_SO_SONAME) '$(DESTDIR)$(libdir)/libpsv.so'
	$(INSTALL) -m 644 $(LIBDIR)/libpsv.a '$(DESTDIR)$(libdir)/libpsv.a'
	$(INSTALL) -m 644 include/psv.h include/psv.hpp '$(DESTDIR)$(includedir)/'
	$(INSTALL) -m 644 $(BUILD)/psv.pc '$(DESTDIR)$(pkgconfigdir)/psv.pc'
	if [ -f $(LIBDIR)/psv ]; then \
		$(INSTALL) -d '$(DESTDIR)$(bindir)' && \
		$(INSTALL) -m 755 $(LIBDIR)/psv '$(DESTDIR)$(bindir)/psv'; \
	fi
	@if command -v readelf >/dev/null 2>&1; then \
		readelf -d '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)' | grep -q 'Library soname: \[$(PSV_SO_SONAME)\]' \
		|| { echo "install: $(PSV_SO_FULL) does not have SONAME $(PSV_SO_SONAME)" >&2; exit 1; }; \
	fi

uninstall:
	rm -f '$(DESTDIR)$(libdir)/$(PSV_SO_FULL)' '$(DESTDIR)$(libdir)/$(PSV_SO_SONAME)' \
	      '$(DESTDIR)$(libdir)/libpsv.so' '$(DESTDIR)$(libdir)/libpsv.a' \
	      '$(DESTDIR)$(includedir)/psv.h' '$(DESTDIR)$(includedir)/psv.hpp' \
	      '$(DESTDIR)$(pkgconfigdir)/psv.pc' '$(DESTDIR)$(bindir)/psv'

test-install: lib $(PSV_NATIVE_STATIC_LIBS_FILE)
	MAKE='$(MAKE)' CC='$(CC)' CXX='$(CXX)' PSV_VERSION='$(PSV_PKG_VERSION)' PSV_SOVER='$(PSV_SOVER)' \
		sh tests/install/test_install.sh '$(abspath $(BUILD))/test-install'

TEST_TARGETS += test-install
