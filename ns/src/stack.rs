//! Stacks for children started by [`clone3_with_stack`](crate::clone3_with_stack).

use std::io;

use crate::error::{Error, Result};

/// An anonymous, private memory mapping used as a child's stack, with an inaccessible guard page
/// below it so that an overflow faults instead of corrupting memory. Unmapped on drop.
#[derive(Debug)]
pub struct ChildStack {
    /// Start of the mapping (the guard page).
    map: *mut libc::c_void,
    map_len: usize,
    page: usize,
}

// SAFETY: the mapping is owned by this value alone; the raw pointer is only an address.
unsafe impl Send for ChildStack {}
// SAFETY: as above; `&ChildStack` gives out addresses only.
unsafe impl Sync for ChildStack {}

impl ChildStack {
    /// Maps a stack of at least `size` bytes (rounded up to whole pages) plus a guard page.
    /// Pages are only backed by memory once the child touches them (`MAP_NORESERVE`).
    pub fn new(size: usize) -> Result<ChildStack> {
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let usable = size.max(1).div_ceil(page) * page;
        let map_len = usable + page;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(Error::Stack {
                size,
                source: io::Error::last_os_error(),
            });
        }
        let stack = ChildStack { map, map_len, page };
        // SAFETY: the first page lies within the mapping just made.
        if unsafe { libc::mprotect(map, page, libc::PROT_NONE) } == -1 {
            return Err(Error::Stack {
                size,
                source: io::Error::last_os_error(),
            });
        }
        Ok(stack)
    }

    /// The lowest usable address (just above the guard page).
    pub fn base(&self) -> *mut u8 {
        // SAFETY: the offset stays within the mapping.
        unsafe { self.map.cast::<u8>().add(self.page) }
    }

    /// The usable length in bytes.
    pub fn len(&self) -> usize {
        self.map_len - self.page
    }

    /// Always false: a stack has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value owns.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}
