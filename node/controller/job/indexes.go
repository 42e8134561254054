package job

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
)

// indexSet is a set of completion indexes, written as Kubernetes writes
// status.completedIndexes: ascending, ranges of three or more as "a-b",
// e.g. "0-2,5,7,8".
type indexSet map[int]struct{}

// parseIndexes reads an index list, ignoring malformed parts and indexes
// outside [0, completions).
func parseIndexes(s string, completions int) indexSet {
	set := indexSet{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		first, last := part, part
		if i := strings.IndexByte(part, '-'); i > 0 {
			first, last = part[:i], part[i+1:]
		}
		a, err1 := strconv.Atoi(first)
		b, err2 := strconv.Atoi(last)
		if err1 != nil || err2 != nil || a < 0 || b < a {
			continue
		}
		for ix := a; ix <= b && ix < completions; ix++ {
			set[ix] = struct{}{}
		}
	}
	return set
}

func (s indexSet) add(ix int) {
	if ix >= 0 {
		s[ix] = struct{}{}
	}
}

func (s indexSet) has(ix int) bool {
	_, ok := s[ix]
	return ok
}

func (s indexSet) len() int { return len(s) }

func (s indexSet) String() string {
	ixs := make([]int, 0, len(s))
	for ix := range s {
		ixs = append(ixs, ix)
	}
	sort.Ints(ixs)
	var b strings.Builder
	for i := 0; i < len(ixs); {
		j := i
		for j+1 < len(ixs) && ixs[j+1] == ixs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ixs[i]))
		switch {
		case j == i+1:
			b.WriteByte(',')
			b.WriteString(strconv.Itoa(ixs[j]))
		case j > i+1:
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(ixs[j]))
		}
		i = j + 1
	}
	return b.String()
}

// matchSuccessPolicy reports whether the succeeded indexes satisfy a rule
// of an Indexed Job's successPolicy, with Kubernetes' message.
func matchSuccessPolicy(p *batchv1.SuccessPolicy, completions int, succeeded indexSet) (string, bool) {
	for i, r := range p.Rules {
		matched := false
		switch {
		case r.SucceededIndexes != nil:
			want := parseIndexes(*r.SucceededIndexes, completions)
			n := 0
			for ix := range want {
				if succeeded.has(ix) {
					n++
				}
			}
			if r.SucceededCount != nil {
				matched = n >= int(*r.SucceededCount)
			} else {
				matched = len(want) > 0 && n == len(want)
			}
		case r.SucceededCount != nil:
			matched = succeeded.len() >= int(*r.SucceededCount)
		}
		if matched {
			return fmt.Sprintf("Matched rules at index %d", i), true
		}
	}
	return "", false
}
