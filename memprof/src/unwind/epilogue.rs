//! Unwinding a frame that has no trustworthy unwind rule by running its code forward, in
//! imitation, from where it would resume to the `ret` that leaves it: the instructions that
//! take its frame down (`add rsp`, `pop`, `leave`, a stack pointer reloaded from a slot) say
//! where its return address lies and what it gives back to its caller in `rbp`.
//!
//! For code without unwind tables (cgo's C code in a Go binary linked internally, assembly)
//! this is exact where stack scanning guesses (a stale return address in an uninitialised
//! local looks like any other), and it crosses Go's `asmcgocall`, whose stack switch Go's own
//! `.debug_frame` does not describe. Only registers are modelled, and the stack words the
//! copy holds or the imitation wrote; a conditional branch is followed both ways (fall
//! through first), and a path that does what the imitation cannot follow (an indirect jump,
//! a stack pointer from memory it cannot read, a trap) is given up.
use std::ops::Range;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

/// Instructions imitated for one frame, over every path tried.
const BUDGET: usize = 512;
/// Conditional branches whose other way is kept for later.
const MAX_FORKS: usize = 16;

/// What the imitation reads: the code, the stack copy, and which words are return addresses.
pub(super) trait Machine {
    /// The code bytes from `address` on (a few hundred are plenty), when memprof has them.
    fn code(&self, address: u64) -> Option<&[u8]>;
    /// The copied stack's word at `address`.
    fn stack_word(&self, address: u64) -> Option<u64>;
    /// Whether `address` is a return address (follows a call in code memprof read).
    fn returns_to(&self, address: u64) -> bool;
}

/// The caller's registers, once the frame that would resume at `ip` has returned: (return
/// address, stack pointer, frame pointer). With `function`, the function's code, a jump out
/// of it ends the path: where a function never returns (Go's `mcall`), what follows its last
/// call is no way out of it.
pub(super) fn unwind(
    machine: &impl Machine,
    function: Option<Range<u64>>,
    ip: u64,
    sp: u64,
    bp: u64,
) -> Option<(u64, u64, u64)> {
    let mut gprs = [None; 16];
    gprs[gpr(Register::RSP)?] = Some(sp);
    gprs[gpr(Register::RBP)?] = Some(bp);
    let mut paths = vec![State {
        ip,
        gprs,
        written: Vec::new(),
    }];
    let mut budget = BUDGET;
    let mut info = InstructionInfoFactory::new();
    while let Some(mut state) = paths.pop() {
        loop {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            match state.step(machine, &mut info) {
                Step::Next if function.as_ref().is_some_and(|f| !f.contains(&state.ip)) => break,
                Step::Next => {}
                Step::Fork(taken) => {
                    if paths.len() < MAX_FORKS {
                        let mut other = state.clone();
                        other.ip = taken;
                        // Tried once the fall-through is given up.
                        paths.push(other);
                    }
                }
                Step::Returned(ret, sp, bp) if machine.returns_to(ret) => {
                    return Some((ret, sp, bp));
                }
                Step::Returned(..) | Step::Lost => break,
            }
        }
    }
    None
}

/// One path of the imitation: where it is, what it knows of the 16 general registers, and
/// the stack words it wrote (below the copy, or over it).
#[derive(Clone)]
struct State {
    ip: u64,
    gprs: [Option<u64>; 16],
    written: Vec<(u64, Option<u64>)>,
}

enum Step {
    Next,
    /// A conditional branch: this path falls through; the branch target is another.
    Fork(u64),
    /// `ret`: the return address, and the caller's stack and frame pointers.
    Returned(u64, u64, u64),
    /// What this path does cannot be imitated.
    Lost,
}

/// The index of a general register by its 64-bit name.
fn gpr(register: Register) -> Option<usize> {
    let full = register.full_register();
    full.is_gpr64()
        .then(|| full.number() - Register::RAX.number())
}

impl State {
    fn reg(&self, register: Register) -> Option<u64> {
        self.gprs[gpr(register)?]
    }

    fn set(&mut self, register: Register, value: Option<u64>) -> Option<()> {
        self.gprs[gpr(register)?] = value;
        Some(())
    }

    fn sp(&self) -> Option<u64> {
        self.reg(Register::RSP)
    }

    fn read(&self, machine: &impl Machine, address: u64) -> Option<u64> {
        match self.written.iter().rev().find(|(at, _)| *at == address) {
            Some((_, value)) => *value,
            None => machine.stack_word(address),
        }
    }

    fn write(&mut self, address: u64, value: Option<u64>) {
        self.written.push((address, value));
    }

    /// The address of a memory operand whose base register is known and that has no index.
    fn address(&self, instruction: &Instruction) -> Option<u64> {
        if instruction.memory_index() != Register::None
            || instruction.segment_prefix() != Register::None
        {
            return None;
        }
        let base = match instruction.memory_base() {
            Register::RIP => instruction.next_ip(),
            base => self.reg(base)?,
        };
        Some(base.wrapping_add(instruction.memory_displacement64()))
    }

    fn pop(&mut self, machine: &impl Machine) -> Option<u64> {
        let sp = self.sp()?;
        self.set(Register::RSP, Some(sp.checked_add(8)?));
        self.read(machine, sp)
    }

    fn step(&mut self, machine: &impl Machine, info: &mut InstructionInfoFactory) -> Step {
        let Some(bytes) = machine.code(self.ip) else {
            return Step::Lost;
        };
        let mut decoder = Decoder::with_ip(64, bytes, self.ip, DecoderOptions::NONE);
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return Step::Lost;
        }
        self.ip = instruction.next_ip();
        self.imitate(machine, info, &instruction)
            .unwrap_or(Step::Lost)
    }

    fn imitate(
        &mut self,
        machine: &impl Machine,
        info: &mut InstructionInfoFactory,
        instruction: &Instruction,
    ) -> Option<Step> {
        let op0_reg =
            (instruction.op0_kind() == OpKind::Register).then(|| instruction.op0_register());
        let full64 = |r: Register| r.full_register().is_gpr64() && r.size() == 8;
        match instruction.mnemonic() {
            Mnemonic::Ret => {
                let ret = self.pop(machine)?;
                let sp = self.sp()? + u64::from(instruction.immediate16());
                return Some(Step::Returned(ret, sp, self.reg(Register::RBP)?));
            }
            Mnemonic::Pop if op0_reg.is_some_and(full64) => {
                let value = self.pop(machine);
                self.set(op0_reg?, value)?;
                return Some(Step::Next);
            }
            Mnemonic::Push if op0_reg.is_some_and(full64) => {
                let value = self.reg(op0_reg?);
                let sp = self.sp()?.checked_sub(8)?;
                self.set(Register::RSP, Some(sp));
                self.write(sp, value);
                return Some(Step::Next);
            }
            Mnemonic::Leave => {
                let bp = self.reg(Register::RBP)?;
                self.set(Register::RSP, Some(bp));
                let value = self.pop(machine);
                self.set(Register::RBP, value);
                return Some(Step::Next);
            }
            Mnemonic::Mov if op0_reg.is_some_and(full64) => {
                let value = match instruction.op1_kind() {
                    OpKind::Register => self.reg(instruction.op1_register()),
                    OpKind::Memory => self
                        .address(instruction)
                        .and_then(|a| self.read(machine, a)),
                    OpKind::Immediate32to64 | OpKind::Immediate64 => Some(instruction.immediate(1)),
                    _ => None,
                };
                self.set(op0_reg?, value)?;
                return Some(Step::Next);
            }
            Mnemonic::Mov if instruction.op0_kind() == OpKind::Memory => {
                if let Some(at) = self.address(instruction) {
                    let value = match instruction.op1_kind() {
                        OpKind::Register if full64(instruction.op1_register()) => {
                            self.reg(instruction.op1_register())
                        }
                        _ => None,
                    };
                    self.write(at, value);
                }
                return Some(Step::Next);
            }
            Mnemonic::Lea if op0_reg.is_some_and(full64) => {
                let value = self.address(instruction);
                self.set(op0_reg?, value)?;
                return Some(Step::Next);
            }
            Mnemonic::Add | Mnemonic::Sub
                if op0_reg.is_some_and(full64)
                    && instruction.op1_kind() != OpKind::Register
                    && instruction.op1_kind() != OpKind::Memory =>
            {
                // Sign-extended to 64 bits whatever its encoding (imm8, imm32).
                let imm = instruction.immediate(1);
                let value = self.reg(op0_reg?).map(|v| match instruction.mnemonic() {
                    Mnemonic::Add => v.wrapping_add(imm),
                    _ => v.wrapping_sub(imm),
                });
                self.set(op0_reg?, value)?;
                return Some(Step::Next);
            }
            _ => {}
        }
        match instruction.flow_control() {
            FlowControl::UnconditionalBranch if instruction.op0_kind() == OpKind::NearBranch64 => {
                self.ip = instruction.near_branch_target();
                return Some(Step::Next);
            }
            FlowControl::ConditionalBranch => {
                return Some(Step::Fork(instruction.near_branch_target()));
            }
            // A callee leaves the stack pointer as it found it, and may change the registers
            // the ABI lets it (the caller-saved ones).
            FlowControl::Call | FlowControl::IndirectCall => {
                for r in [
                    Register::RAX,
                    Register::RCX,
                    Register::RDX,
                    Register::RSI,
                    Register::RDI,
                    Register::R8,
                    Register::R9,
                    Register::R10,
                    Register::R11,
                ] {
                    self.set(r, None);
                }
                return Some(Step::Next);
            }
            FlowControl::Next => {}
            // Indirect jumps, traps, returns with a far pointer, exceptions.
            _ => return None,
        }
        // Anything else: what it writes becomes unknown; the stack pointer must not be among it.
        for used in info.info(instruction).used_registers() {
            let writes = matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if writes && gpr(used.register()).is_some() {
                if used.register().full_register() == Register::RSP {
                    return None;
                }
                self.set(used.register(), None);
            }
        }
        Some(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Code at one address, a stack of words, and return addresses listed by hand.
    struct Fake {
        code_at: u64,
        code: Vec<u8>,
        stack: HashMap<u64, u64>,
        returns: Vec<u64>,
    }

    impl Machine for Fake {
        fn code(&self, address: u64) -> Option<&[u8]> {
            let at = usize::try_from(address.checked_sub(self.code_at)?).ok()?;
            self.code.get(at..)
        }
        fn stack_word(&self, address: u64) -> Option<u64> {
            self.stack.get(&address).copied()
        }
        fn returns_to(&self, address: u64) -> bool {
            self.returns.contains(&address)
        }
    }

    const SP: u64 = 0x7fff_0000;
    const BP: u64 = 0x7fff_1000;
    const CALLER: u64 = 0x40_1000;

    fn fake(code: &[u8], stack: &[(u64, u64)]) -> Fake {
        Fake {
            code_at: 0x40_0000,
            code: code.to_vec(),
            stack: stack.iter().copied().collect(),
            returns: vec![CALLER],
        }
    }

    #[test]
    fn a_frame_taken_down_by_add_and_pops_gives_its_caller_and_the_saved_frame_pointer() {
        // xor edx,edx; test ebx,ebx; jne to a trap;
        // add rsp,0x150; pop rbx; pop rbp; pop r12; ret
        let code = [
            0x31, 0xd2, 0x85, 0xdb, 0x75, 0x0e, 0x48, 0x81, 0xc4, 0x50, 0x01, 0x00, 0x00, 0x5b,
            0x5d, 0x41, 0x5c, 0xc3, 0xcc, 0xcc, 0xcc, 0xcc,
        ];
        let top = SP + 0x150;
        let machine = fake(
            &code,
            &[(top, 1), (top + 8, BP), (top + 16, 3), (top + 24, CALLER)],
        );
        assert_eq!(
            unwind(&machine, None, 0x40_0000, SP, 0x1234),
            Some((CALLER, top + 32, BP))
        );
    }

    #[test]
    fn a_stack_pointer_reloaded_from_a_slot_is_followed_as_go_asmcgocall_does() {
        // mov rsi,[rsp+0x28]; mov rsp,rsi; mov [rsp+0x18],eax; ret
        let code = [
            0x48, 0x8b, 0x74, 0x24, 0x28, 0x48, 0x89, 0xf4, 0x89, 0x44, 0x24, 0x18, 0xc3,
        ];
        let caller_sp = SP + 0x400;
        let machine = fake(&code, &[(SP + 0x28, caller_sp), (caller_sp, CALLER)]);
        assert_eq!(
            unwind(&machine, None, 0x40_0000, SP, BP),
            Some((CALLER, caller_sp + 8, BP))
        );
    }

    #[test]
    fn a_word_that_is_no_return_address_sends_the_imitation_down_the_other_branch() {
        // je +1; ret (to a word that is no return address) / add rsp,8; ret
        let code = [0x74, 0x01, 0xc3, 0x48, 0x83, 0xc4, 0x08, 0xc3];
        let machine = fake(&code, &[(SP, 0xdead), (SP + 8, CALLER)]);
        assert_eq!(
            unwind(&machine, None, 0x40_0000, SP, BP),
            Some((CALLER, SP + 16, BP))
        );
        let refused = fake(&[0xc3], &[(SP, 0xdead)]);
        assert_eq!(unwind(&refused, None, 0x40_0000, SP, BP), None);
    }

    #[test]
    fn a_stack_pointer_it_cannot_know_ends_the_path() {
        // mov rdi,[rsp+0x30]; mov rsi,[rdi+8]; mov rsp,rsi; ret: rdi points off the stack.
        let code = [
            0x48, 0x8b, 0x7c, 0x24, 0x30, 0x48, 0x8b, 0x77, 0x08, 0x48, 0x89, 0xf4, 0xc3,
        ];
        let machine = fake(&code, &[(SP + 0x30, 0x1000)]);
        assert_eq!(unwind(&machine, None, 0x40_0000, SP, BP), None);
    }

    #[test]
    fn a_jump_out_of_a_function_that_never_returns_ends_the_path() {
        // call rax; pop rax; jmp (out of the function) to a ret
        let code = [0xff, 0xd0, 0x58, 0xeb, 0x00, 0xc3];
        let machine = fake(&code, &[(SP, 0), (SP + 8, CALLER)]);
        assert_eq!(
            unwind(&machine, None, 0x40_0002, SP, BP),
            Some((CALLER, SP + 16, BP))
        );
        let mcall = Some(0x40_0000..0x40_0005);
        assert_eq!(unwind(&machine, mcall, 0x40_0002, SP, BP), None);
    }

    #[test]
    fn immediates_of_every_width_take_the_frame_down() {
        // add rsp,8 (imm8); sub rsp,-8 (imm8, sign-extended: adds 8); mov rax,imm32; ret
        let code = [
            0x48, 0x83, 0xc4, 0x08, 0x48, 0x83, 0xec, 0xf8, 0x48, 0xc7, 0xc0, 0x01, 0x00, 0x00,
            0x00, 0xc3,
        ];
        let machine = fake(&code, &[(SP + 16, CALLER)]);
        assert_eq!(
            unwind(&machine, None, 0x40_0000, SP, BP),
            Some((CALLER, SP + 24, BP))
        );
    }

    #[test]
    fn leave_restores_the_callers_frame() {
        // leave; ret
        let machine = fake(&[0xc9, 0xc3], &[(BP, 0x7fff_2000), (BP + 8, CALLER)]);
        assert_eq!(
            unwind(&machine, None, 0x40_0000, SP, BP),
            Some((CALLER, BP + 16, 0x7fff_2000))
        );
    }
}
