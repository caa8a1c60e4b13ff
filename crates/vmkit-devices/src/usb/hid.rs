//! HID input state as QEMU's `hid.c` keeps it: a 16-entry queue of
//! pointer events (motion merged while the buttons do not change) or of
//! keyboard scancodes, and the boot-protocol reports polled from it.

/// Entries of the event queue.
pub const QUEUE_LENGTH: usize = 16;
const QUEUE_MASK: usize = QUEUE_LENGTH - 1;
/// The largest absolute coordinate (QEMU's `INPUT_EVENT_ABS_MAX`).
pub const ABS_MAX: i32 = 0x7fff;
/// The keyboard report's code for "too many keys down".
const USAGE_ERROR_ROLLOVER: u8 = 0x01;

/// Which device the state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HidKind {
    /// An absolute pointer (`usb-tablet`).
    Tablet,
    /// A boot keyboard (`usb-kbd`).
    Keyboard,
}

/// An absolute axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Horizontal.
    X,
    /// Vertical.
    Y,
}

/// A pointer button (QEMU's `InputButton` subset the tablet reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    /// Left (report bit 0).
    Left,
    /// Right (report bit 1).
    Right,
    /// Middle (report bit 2).
    Middle,
    /// Wheel up: one step of the wheel per press.
    WheelUp,
    /// Wheel down.
    WheelDown,
}

impl Button {
    fn bit(self) -> u8 {
        match self {
            Button::Left => 0x01,
            Button::Right => 0x02,
            Button::Middle => 0x04,
            Button::WheelUp | Button::WheelDown => 0,
        }
    }
}

/// One pointer input event, as QEMU's input layer hands them over; a
/// [`HidState::pointer_sync`] makes the accumulated ones one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointerInput {
    /// An absolute position on one axis, 0..=[`ABS_MAX`].
    Abs {
        /// Which axis.
        axis: Axis,
        /// Where.
        value: i32,
    },
    /// A button press or release.
    Button {
        /// Which button.
        button: Button,
        /// Pressed.
        down: bool,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PointerEvent {
    xdx: i32,
    ydy: i32,
    dz: i32,
    buttons: u8,
}

/// HID usage codes by QEMU key number; numbers from 0x80 are the keys
/// after an 0xe0 prefix (and the 0xe1 0x1d sequence).
const USAGE_KEYS: [u8; 0x100] = [
    0x00, 0x29, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2d, 0x2e, 0x2a, 0x2b, //
    0x14, 0x1a, 0x08, 0x15, 0x17, 0x1c, 0x18, 0x0c, 0x12, 0x13, 0x2f, 0x30, 0x28, 0xe0, 0x04, 0x16, //
    0x07, 0x09, 0x0a, 0x0b, 0x0d, 0x0e, 0x0f, 0x33, 0x34, 0x35, 0xe1, 0x31, 0x1d, 0x1b, 0x06, 0x19, //
    0x05, 0x11, 0x10, 0x36, 0x37, 0x38, 0xe5, 0x55, 0xe2, 0x2c, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, //
    0x3f, 0x40, 0x41, 0x42, 0x43, 0x53, 0x47, 0x5f, 0x60, 0x61, 0x56, 0x5c, 0x5d, 0x5e, 0x57, 0x59, //
    0x5a, 0x5b, 0x62, 0x63, 0x46, 0x00, 0x64, 0x44, 0x45, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, //
    0xe8, 0xe9, 0x71, 0x72, 0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x85, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe3, 0xe7, 0x65, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x58, 0xe4, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x54, 0x00, 0x46, 0xe6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x48, 0x48, 0x4a, 0x52, 0x4b, 0x00, 0x50, 0x00, 0x4f, 0x00, 0x4d, //
    0x51, 0x4e, 0x49, 0x4c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe3, 0xe7, 0x65, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
];

/// The set-1 prefix of extended keys.
const SCANCODE_EMUL0: u8 = 0xe0;
/// The set-1 prefix of Pause.
const SCANCODE_EMUL1: u8 = 0xe1;
/// A key number's "extended" bit; a scancode's "released" bit.
const SCANCODE_GREY: u8 = 0x80;
/// Modifier bits 8 and 9: the 0xe0 and 0xe1 0x1d prefix state machine.
const MOD_EMUL0: u16 = 1 << 8;
const MOD_EMUL1: u16 = 1 << 9;

/// A HID device's input state as it migrates, in QEMU's field types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HidSnapshot {
    /// `ptr.queue`: per entry `xdx`, `ydy`, `dz`, `buttons_state`.
    pub queue: [[i32; 4]; QUEUE_LENGTH],
    /// `kbd.keycodes`: the scancode queue.
    pub keycodes: [u32; QUEUE_LENGTH],
    /// The queue's first entry.
    pub head: u32,
    /// Entries queued.
    pub n: u32,
    /// `kbd.modifiers`.
    pub modifiers: u16,
    /// `kbd.leds`.
    pub leds: u8,
    /// `kbd.key`: the usage codes of the keys down.
    pub key: [u8; 16],
    /// `kbd.keys`: how many of them.
    pub keys: i32,
    /// Boot (0) or report (1) protocol.
    pub protocol: i32,
    /// The idle rate.
    pub idle: u8,
}

/// A HID device's input state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HidState {
    kind: HidKind,
    head: usize,
    n: usize,
    queue: [PointerEvent; QUEUE_LENGTH],
    keycodes: [u8; QUEUE_LENGTH],
    modifiers: u16,
    leds: u8,
    keys_down: [u8; 16],
    keys: usize,
    protocol: u8,
    idle: u8,
}

impl HidState {
    /// Empty state of `kind` as QEMU's `hid_init` leaves it: no idle
    /// rate and protocol 0 — its state starts zeroed, and only the first
    /// reset selects the report protocol (what a migration at that point
    /// carries).
    pub fn new(kind: HidKind) -> HidState {
        HidState {
            kind,
            head: 0,
            n: 0,
            queue: [PointerEvent::default(); QUEUE_LENGTH],
            keycodes: [0; QUEUE_LENGTH],
            modifiers: 0,
            leds: 0,
            keys_down: [0; 16],
            keys: 0,
            protocol: 0,
            idle: 0,
        }
    }

    /// Which device.
    pub fn kind(&self) -> HidKind {
        self.kind
    }

    /// Back to the reset state: the queue emptied, keys up, report protocol.
    pub fn reset(&mut self) {
        *self = HidState {
            protocol: 1,
            ..HidState::new(self.kind)
        };
    }

    /// Whether a report is waiting (QEMU's `hid_has_events`; its idle
    /// timer is not modelled, so only queued input counts).
    pub fn has_events(&self) -> bool {
        self.n > 0
    }

    /// Entries waiting in the queue.
    pub fn queued(&self) -> usize {
        self.n
    }

    /// The protocol set by SET_PROTOCOL (0 boot, 1 report).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.protocol = protocol;
    }

    /// The idle rate set by SET_IDLE (4 ms units).
    pub fn idle(&self) -> u8 {
        self.idle
    }

    /// Sets the idle rate.
    pub fn set_idle(&mut self, idle: u8) {
        self.idle = idle;
    }

    /// The LED byte the host last wrote (SET_REPORT output).
    pub fn leds(&self) -> u8 {
        self.leds
    }

    fn slot(&self, offset: usize) -> usize {
        (self.head + offset) & QUEUE_MASK
    }

    /// Folds one pointer event into the pending (not yet visible) entry.
    pub fn pointer_event(&mut self, input: PointerInput) {
        let at = self.slot(self.n);
        let e = &mut self.queue[at];
        match input {
            PointerInput::Abs { axis: Axis::X, value } => e.xdx = value,
            PointerInput::Abs { axis: Axis::Y, value } => e.ydy = value,
            PointerInput::Button { button, down: true } => {
                e.buttons |= button.bit();
                match button {
                    Button::WheelUp => e.dz = e.dz.saturating_sub(1),
                    Button::WheelDown => e.dz = e.dz.saturating_add(1),
                    _ => {}
                }
            }
            PointerInput::Button { button, down: false } => e.buttons &= !button.bit(),
        }
    }

    /// Makes the pending pointer entry visible (QEMU's `hid_pointer_sync`):
    /// merged into the previous one if the buttons did not change, else a
    /// new queue entry. Returns whether the guest should be told (a new
    /// entry); with the queue full the input is lost but the latest
    /// button state kept.
    pub fn pointer_sync(&mut self) -> bool {
        if self.n == QUEUE_LENGTH - 1 {
            return false;
        }
        let (prev, curr, next) = (
            self.slot(self.n + QUEUE_LENGTH - 1),
            self.slot(self.n),
            self.slot(self.n + 1),
        );
        if self.n > 0 && self.queue[curr].buttons == self.queue[prev].buttons {
            // Motion only: the tablet keeps the latest position.
            let c = self.queue[curr];
            let p = &mut self.queue[prev];
            p.xdx = c.xdx;
            p.ydy = c.ydy;
            p.dz = p.dz.saturating_add(c.dz);
            self.queue[curr].dz = 0;
            false
        } else {
            let c = self.queue[curr];
            self.queue[next] = PointerEvent {
                xdx: c.xdx,
                ydy: c.ydy,
                dz: 0,
                buttons: c.buttons,
            };
            self.n += 1;
            true
        }
    }

    /// The tablet report (buttons, x, y little-endian, wheel), at most
    /// `len` bytes; takes the head entry off the queue once its wheel
    /// motion is reported. With the queue empty it repeats the last one.
    pub fn pointer_poll(&mut self, len: usize) -> Vec<u8> {
        let index = (if self.n > 0 {
            self.head
        } else {
            self.head + QUEUE_LENGTH - 1
        }) & QUEUE_MASK;
        let e = &mut self.queue[index];
        let (dx, dy) = (e.xdx, e.ydy);
        let dz = e.dz.clamp(-127, 127);
        e.dz -= dz;
        let buttons = e.buttons;
        if self.n > 0 && self.queue[index].dz == 0 {
            self.head = (self.head + 1) & QUEUE_MASK;
            self.n -= 1;
        }
        // The wheel direction is inverted in the report, as QEMU's.
        let dz = -dz;
        let report = [buttons, dx as u8, (dx >> 8) as u8, dy as u8, (dy >> 8) as u8, dz as u8];
        report[..len.min(report.len())].to_vec()
    }

    /// Queues a key press or release by QEMU key number (the `number`
    /// form of input-send-event: set-1 scancodes, 0x80 and up for keys
    /// after an 0xe0 prefix). Returns whether it was queued (and the
    /// guest should be told); a full queue drops it, as QEMU does.
    pub fn key_event(&mut self, number: u8, down: bool) -> bool {
        let up = if down { 0 } else { SCANCODE_GREY };
        let codes: Vec<u8> = if number & SCANCODE_GREY != 0 {
            vec![SCANCODE_EMUL0, (number & !SCANCODE_GREY) | up]
        } else {
            vec![number | up]
        };
        self.queue_scancodes(&codes)
    }

    /// Queues Pause, which has no key number: 0xe1 0x1d 0x45.
    pub fn pause_event(&mut self, down: bool) -> bool {
        let up = if down { 0 } else { SCANCODE_GREY };
        self.queue_scancodes(&[SCANCODE_EMUL1, 0x1d | up, 0x45 | up])
    }

    fn queue_scancodes(&mut self, codes: &[u8]) -> bool {
        if self.n + codes.len() > QUEUE_LENGTH {
            return false;
        }
        for &code in codes {
            let at = self.slot(self.n);
            self.keycodes[at] = code;
            self.n += 1;
        }
        true
    }

    /// Takes one scancode off the queue into the modifier and key state.
    fn process_keycode(&mut self) {
        if self.n == 0 {
            return;
        }
        let keycode = self.keycodes[self.head];
        self.head = (self.head + 1) & QUEUE_MASK;
        self.n -= 1;
        let key = keycode & 0x7f;
        let index = usize::from(key) | usize::from((self.modifiers & MOD_EMUL0) >> 1);
        let code = USAGE_KEYS[index];
        self.modifiers &= !MOD_EMUL0;
        let released = keycode & SCANCODE_GREY != 0;
        match code {
            0x00 => return,
            0xe0 if self.modifiers & MOD_EMUL1 != 0 => {
                // The second code of 0xe1 0x1d: the next one reads the
                // table's upper half.
                self.modifiers ^= MOD_EMUL0 | MOD_EMUL1;
                return;
            }
            0xe0..=0xe7 if released => {
                self.modifiers &= !(1 << (code & 0x0f));
                return;
            }
            0xe0..=0xe9 => {
                self.modifiers |= 1 << (code & 0x0f);
                return;
            }
            _ => {}
        }
        let held = self.keys_down[..self.keys].iter().rposition(|&k| k == code);
        match (released, held) {
            (true, Some(i)) => {
                self.keys -= 1;
                self.keys_down[i] = self.keys_down[self.keys];
                self.keys_down[self.keys] = 0;
            }
            (false, None) if self.keys < self.keys_down.len() => {
                self.keys_down[self.keys] = code;
                self.keys += 1;
            }
            _ => {}
        }
    }

    /// The boot keyboard report (modifiers, reserved, six keys), at most
    /// `len` bytes, after taking one scancode off the queue. Nothing when
    /// `len` is under 2.
    pub fn keyboard_poll(&mut self, len: usize) -> Vec<u8> {
        if len < 2 {
            return Vec::new();
        }
        self.process_keycode();
        let mut report = vec![self.modifiers as u8, 0];
        let n = len.min(8) - 2;
        if self.keys > 6 {
            report.extend(std::iter::repeat_n(USAGE_ERROR_ROLLOVER, n));
        } else {
            report.extend_from_slice(&self.keys_down[..n]);
        }
        report
    }

    /// The host wrote the output report: the LED byte.
    pub fn keyboard_write(&mut self, data: &[u8]) {
        if let Some(&leds) = data.first() {
            self.leds = leds;
        }
    }

    /// The state as QEMU's "HIDPointerDevice" / "HIDKeyboardDevice" carry
    /// it (the fields of the other kind are zero).
    pub fn snapshot(&self) -> HidSnapshot {
        let mut queue = [[0i32; 4]; QUEUE_LENGTH];
        for (q, e) in queue.iter_mut().zip(&self.queue) {
            *q = [e.xdx, e.ydy, e.dz, i32::from(e.buttons)];
        }
        HidSnapshot {
            queue,
            keycodes: self.keycodes.map(u32::from),
            head: self.head as u32,
            n: self.n as u32,
            modifiers: self.modifiers,
            leds: self.leds,
            key: self.keys_down,
            keys: self.keys as i32,
            protocol: i32::from(self.protocol),
            idle: self.idle,
        }
    }

    /// Installs a migrated state, refusing values this model cannot hold
    /// (QEMU indexes its arrays with them unchecked); then QEMU's
    /// `hid_post_load`: a full pointer queue (from an older QEMU) keeps
    /// only its last event.
    pub fn restore(&mut self, s: &HidSnapshot) -> Result<(), String> {
        let count = |what: &str, v: u32| -> Result<usize, String> {
            usize::try_from(v)
                .ok()
                .filter(|&v| v <= QUEUE_LENGTH)
                .ok_or_else(|| format!("{what} {v} is beyond the {QUEUE_LENGTH}-entry queue"))
        };
        let n = count("n", s.n)?;
        let head = (s.head as usize) & QUEUE_MASK;
        let keys = usize::try_from(s.keys)
            .ok()
            .filter(|&k| k <= self.keys_down.len())
            .ok_or_else(|| format!("kbd.keys {} is not 0..=16", s.keys))?;
        let protocol = u8::try_from(s.protocol).map_err(|_| format!("protocol {} is not a uint8", s.protocol))?;
        let mut queue = [PointerEvent::default(); QUEUE_LENGTH];
        for (i, (e, q)) in queue.iter_mut().zip(&s.queue).enumerate() {
            let buttons = u8::try_from(q[3])
                .map_err(|_| format!("ptr.queue[{i}].buttons_state {} is not a button mask", q[3]))?;
            *e = PointerEvent {
                xdx: q[0],
                ydy: q[1],
                dz: q[2],
                buttons,
            };
        }
        let mut keycodes = [0u8; QUEUE_LENGTH];
        for (i, (k, &v)) in keycodes.iter_mut().zip(&s.keycodes).enumerate() {
            *k = u8::try_from(v).map_err(|_| format!("kbd.keycodes[{i}] {v:#x} is not a scancode"))?;
        }
        self.queue = queue;
        self.keycodes = keycodes;
        self.head = head;
        self.n = n;
        self.modifiers = s.modifiers;
        self.leds = s.leds;
        self.keys_down = s.key;
        self.keys = keys;
        self.protocol = protocol;
        self.idle = s.idle;
        if self.kind == HidKind::Tablet && self.n == QUEUE_LENGTH {
            let last = self.queue[self.slot(self.n)];
            self.queue[0] = last;
            self.head = 0;
            self.n = 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_and_modifier_keys() {
        let mut hid = HidState::new(HidKind::Keyboard);
        // Right Ctrl is 0x9d: 0xe0 prefix then 0x1d.
        assert!(hid.key_event(0x9d, true));
        assert!(hid.key_event(0x1e, true)); // 'a'
        assert_eq!(hid.queued(), 3);
        assert_eq!(hid.keyboard_poll(8), [0, 0, 0, 0, 0, 0, 0, 0], "the prefix alone");
        assert_eq!(hid.keyboard_poll(8), [0x10, 0, 0, 0, 0, 0, 0, 0], "right ctrl");
        assert_eq!(hid.keyboard_poll(8), [0x10, 0, 0x04, 0, 0, 0, 0, 0]);
        assert!(hid.key_event(0x1e, false));
        assert_eq!(hid.keyboard_poll(8), [0x10, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn the_pointer_queue_merges_motion_and_is_bounded() {
        let mut hid = HidState::new(HidKind::Tablet);
        hid.pointer_event(PointerInput::Abs {
            axis: Axis::X,
            value: 100,
        });
        assert!(hid.pointer_sync());
        hid.pointer_event(PointerInput::Abs {
            axis: Axis::X,
            value: 200,
        });
        assert!(!hid.pointer_sync(), "motion merges into the waiting entry");
        assert_eq!(hid.queued(), 1);
        for i in 0..40 {
            hid.pointer_event(PointerInput::Button {
                button: Button::Left,
                down: i % 2 == 0,
            });
            hid.pointer_sync();
        }
        assert_eq!(hid.queued(), QUEUE_LENGTH - 1);
        assert_eq!(hid.pointer_poll(6), [0, 200, 0, 0, 0, 0]);
    }
}
