package e2e

import (
	"debug/elf"
	"path/filepath"
	"testing"
)

// TestBinariesAreStatic checks the binaries as `make build` makes them:
// statically linked (they run on any Linux node, with no libc or dynamic
// loader) and without the `plugin` package, whose import makes the linker
// export every symbol (containerd's client links it unless built with the
// no_dynamic_plugins tag).
func TestBinariesAreStatic(t *testing.T) {
	shoal := shoalBinary(t)
	for _, path := range []string{shoal, filepath.Join(filepath.Dir(shoal), "shoal-logger")} {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (program header %s)", path, p.Type)
			}
		}
		if dyn, err := f.DynamicSymbols(); err == nil && len(dyn) > 0 {
			t.Errorf("%s exports %d dynamic symbols", path, len(dyn))
		}
		syms, err := f.Symbols()
		if err != nil {
			t.Fatalf("%s: symbols: %v", path, err)
		}
		for _, s := range syms {
			if s.Name == "plugin.Open" {
				t.Errorf("%s links the plugin package (plugin.Open)", path)
				break
			}
		}
		f.Close()
	}
}
