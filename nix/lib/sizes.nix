# Pool sizes: what a VM gets and how many a pool may run at once.
{
  small = { memory_mib = 1024; vcpus = 1; max = 2; min_idle = 0; };
  medium = { memory_mib = 2048; vcpus = 2; max = 5; min_idle = 1; };
  large = { memory_mib = 4096; vcpus = 4; max = 10; min_idle = 1; };
}
