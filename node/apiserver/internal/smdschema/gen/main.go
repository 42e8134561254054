// Command gen writes the structured-merge-diff schemas of the API server's
// types (see package smdschema): go generate in node/apiserver runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/shoal-dev/shoal/node/apiserver/internal/smdschema"
)

func main() {
	out := flag.String("o", "smdschema.yaml", "output file")
	flag.Parse()
	b, err := smdschema.Subset(smdschema.Served)
	if err == nil {
		err = os.WriteFile(*out, append([]byte(smdschema.Header), b...), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
