package oncrpc

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Program is one version of an RPC program: its procedures, indexed by number. The table
// is the one place a procedure's name and handler are given; the server's logging and
// its PROC_UNAVAIL answers derive from it.
type Program struct {
	Name       string // "NFS", "MOUNT": the prefix of the procedures' names in logs
	Number     uint32
	Version    uint32
	Procedures []Procedure // index = procedure number; a zero Procedure is unavailable
}

// Procedure is one entry of a program's table.
type Procedure struct {
	Name   string
	Handle Handler
	// Exclusive procedures run alone on their connection: MOUNT calls are rare and change
	// what the export means to the client, so they are ordered with everything around them.
	Exclusive bool
	// Status: the results begin with the procedure's status, which the call's log line
	// shows.
	Status bool
	// Bulk, when set, tells from a call's arguments that it moves bulk data (a large READ
	// or WRITE). Such a call gets a goroutine of its own even when it is alone on its
	// connection: answering it on the reading goroutine would soon hand reading to a new
	// one anyway (conn.go), which costs more than starting with one.
	Bulk func(call *Call) bool
}

// Handler answers one call: it decodes call.Args and appends the results to reply. A nil
// error sends the reply with accept_stat SUCCESS; ErrGarbageArgs and ErrSystem send those
// accept_stats instead, with no results; ErrWeakAuth denies the call (AUTH_ERROR,
// AUTH_TOOWEAK: this caller may not make it); any other error is a bug in the handler,
// answered SYSTEM_ERR and logged.
type Handler func(ctx context.Context, call *Call, reply *Reply) error

// Errors a Handler returns to choose the accept_stat.
var (
	ErrGarbageArgs = errors.New("oncrpc: arguments do not decode")
	ErrSystem      = errors.New("oncrpc: system error")
	ErrWeakAuth    = errors.New("oncrpc: caller not allowed")
)

// Call is one decoded call.
type Call struct {
	XID, Prog, Vers, Proc uint32
	Cred                  Credential
	Args                  *xdr.Reader // positioned at the procedure's arguments
	Record                []byte      // the whole call record
	Client                string      // the client's host (its address)
	LocalAddr, RemoteAddr net.Addr

	// buf holds Record's memory, reused once the reply is written: Args, Record and
	// every slice of them are valid only until the handler returns.
	buf *[]byte
	// args is what Args points to, allocated with the Call.
	args xdr.Reader
}

// Reply is what a Handler answers. Results go into the embedded Writer, which already
// holds the reply's RPC header. Data, when set, follows the results on the wire, padded,
// without being copied into them (READ's file data); Pipe, when set instead, holds such
// data by reference, spliced into the socket (splice.go). Release, when set, is called
// once the reply has been written (or has failed to be), to recycle Data's buffer or the
// Pipe. Raw, when set, is a whole reply record sent instead (the go-nfs bridge's).
type Reply struct {
	xdr.Writer
	Data    []byte
	Pipe    *Pipe
	Release func()
	Raw     []byte

	resultsAt int
	parts     [3][]byte // the memory of the record's parts (answer)
}

// DataLen is the length of the data that follows the results (Data's or Pipe's).
func (r *Reply) DataLen() int {
	if r.Pipe != nil {
		return r.Pipe.Len()
	}
	return len(r.Data)
}

// Results returns the results appended so far.
func (r *Reply) Results() []byte { return r.Buf[r.resultsAt:] }

// dispatchTable finds the program of a call.
type dispatchTable struct {
	programs map[[2]uint32]*Program // by number and version
	versions map[uint32][2]uint32   // number -> lowest and highest version
}

func newDispatchTable(programs []Program) (*dispatchTable, error) {
	t := &dispatchTable{programs: make(map[[2]uint32]*Program), versions: make(map[uint32][2]uint32)}
	for i := range programs {
		p := &programs[i]
		key := [2]uint32{p.Number, p.Version}
		if _, dup := t.programs[key]; dup {
			return nil, fmt.Errorf("oncrpc: program %d version %d registered twice", p.Number, p.Version)
		}
		t.programs[key] = p
		v, ok := t.versions[p.Number]
		if !ok {
			v = [2]uint32{p.Version, p.Version}
		}
		v[0], v[1] = min(v[0], p.Version), max(v[1], p.Version)
		t.versions[p.Number] = v
	}
	return t, nil
}

// lookup returns the procedure of a call, or the reply that refuses it.
func (t *dispatchTable) lookup(h *header) (*Program, *Procedure, []byte) {
	p, ok := t.programs[[2]uint32{h.prog, h.vers}]
	if !ok {
		if v, known := t.versions[h.prog]; known {
			return nil, nil, progMismatchReply(h.xid, v[0], v[1])
		}
		return nil, nil, acceptedReply(h.xid, ProgUnavail)
	}
	if int64(h.proc) >= int64(len(p.Procedures)) || p.Procedures[h.proc].Handle == nil {
		return p, nil, acceptedReply(h.xid, ProcUnavail)
	}
	return p, &p.Procedures[h.proc], nil
}

// name is how logs call a procedure.
func (t *dispatchTable) name(prog, vers, proc uint32) string {
	if p, ok := t.programs[[2]uint32{prog, vers}]; ok && int64(proc) < int64(len(p.Procedures)) && p.Procedures[proc].Name != "" {
		return p.Name + "." + p.Procedures[proc].Name
	}
	return fmt.Sprintf("%d.%d.%d", prog, vers, proc)
}
