#include <stdio.h>
int main(void) { puts("from lower2"); return 0; }
