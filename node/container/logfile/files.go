package logfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// rotatedLayout is the UTC timestamp after "<path>." in a rotated file's
// name: fixed width, so names sort by time.
const rotatedLayout = "20060102-150405.000000000"

// tmpSuffix names the file a rotation prepares before it becomes Path.
const tmpSuffix = ".tmp"

// rotatedName is the name of path rotated at t.
func rotatedName(path string, t time.Time) string {
	return path + "." + t.UTC().Format(rotatedLayout)
}

// rotatedTime parses the time in the name of a rotated file of path.
func rotatedTime(path, name string) (time.Time, bool) {
	suffix, ok := strings.CutPrefix(name, path+".")
	if !ok || len(suffix) != len(rotatedLayout) {
		return time.Time{}, false
	}
	t, err := time.Parse(rotatedLayout, suffix)
	return t, err == nil
}

// listRotated returns the rotated files of path, oldest first. A missing
// directory has none.
func listRotated(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if _, ok := rotatedTime(base, e.Name()); ok && e.Type().IsRegular() {
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(names) // fixed-width timestamps: by name is by age
	return names, nil
}

// listRotatedStable is listRotated with no gaps: a directory read while
// files are added may miss some and return later ones, so it lists until
// two listings agree. Files that exist before a listing starts are always
// in it: a gap needs a file added during the second listing and missed,
// and a later one added during it and seen, which the first cannot hold.
func listRotatedStable(path string) ([]string, error) {
	prev, err := listRotated(path)
	if err != nil {
		return nil, err
	}
	for range 50 {
		names, err := listRotated(path)
		if err != nil {
			return nil, err
		}
		if slices.Equal(prev, names) {
			break
		}
		prev = names
	}
	return prev, nil
}

// Active reports whether a Writer (in this process or another) still holds
// path, the current file of a log. It is false once the Writer is closed or
// its process has died, and when path does not exist.
func Active(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer f.Close()
	return isLocked(f)
}

// Files returns the files of the log at path, oldest first: the rotated
// ones, then path itself if it exists. Callers that delete a container's
// logs remove them all.
func Files(path string) ([]string, error) {
	names, err := listRotated(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		names = append(names, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return names, nil
}
