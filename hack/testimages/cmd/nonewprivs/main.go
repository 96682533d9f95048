// Command nonewprivs is the entrypoint of the e2e-test-images/nonewprivs
// stand-in. The image installs it setuid root (mode 04755): run as a non-root
// user it reports euid 0 unless the container has no_new_privs set, which is
// exactly what critest's NoNewPrivs specs look for in the container log.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
