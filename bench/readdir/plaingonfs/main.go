// Command plaingonfs is the readdir benchmark's reference: a plain go-nfs export of one
// directory, with go-nfs's stock helpers (NullAuthHandler, CachingHandler) over billy's
// osfs, as a go-nfs user would set it up.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
	"github.com/willscott/go-nfs/helpers"
)

func main() {
	dir := flag.String("dir", "", "directory to export")
	listen := flag.String("listen", "127.0.0.1:0", "HOST:PORT")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	handler := helpers.NewCachingHandler(helpers.NewNullAuthHandler(osfs.New(*dir)), 1<<20)
	fmt.Println("listening", l.Addr())
	if err := nfs.Serve(l, handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
