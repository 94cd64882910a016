// Autograd for sphericart-torch's operators, registered from C++.
//
// sphericart-torch 2.0 defines its TorchScript operators (spherical and solid
// harmonics, with gradients and hessians) in C++ but registers their backward
// formulas from Python only (sphericart/torch/register.py). Inside LAMMPS there is
// no Python: torch would treat the operators as constants when computing forces,
// and every model using them (metatrain's SOAP-BPNN, through torch-spex) would get
// wrong forces. This file registers the same backward formulas as that Python
// code, for the Autograd dispatch key; if a later sphericart-torch registers its
// own C++ autograd, it replaces these (torch prints a warning about overriding).
//
// Registered when pair_style alchemical loads a model, unless the environment
// variable ALCHEM_NO_SPHERICART_AUTOGRAD is set; nothing here runs unless the
// model loads sphericart-torch's library.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <memory>
#include <string>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Boxed calls and kernels: no C++ signature to match the library's (which a
// typed kernel would have to repeat exactly, and which may change between
// versions).
std::vector<at::Tensor> call(const std::string &name, const at::Tensor &xyz, int64_t l_max)
{
  auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow(("sphericart_torch::" + name).c_str(), "");
  torch::jit::Stack stack{xyz, l_max};
  op.callBoxed(&stack);
  std::vector<at::Tensor> result;
  for (const auto &value : stack) {
    if (value.isTensor()) {
      result.push_back(value.toTensor());
    } else if (value.isTuple()) {
      for (const auto &element : value.toTupleRef().elements())
        result.push_back(element.toTensor());
    }
  }
  return result;
}

// grad_xyz = sum_k g[:, k] d(value_k)/d(xyz) (+ the same with second derivatives)
at::Tensor contract_gradients(const at::Tensor &grad, const at::Tensor &dsph)
{
  return (grad.unsqueeze(1) * dsph).sum(2);
}

at::Tensor contract_hessians(const at::Tensor &grad, const at::Tensor &ddsph)
{
  return (grad.unsqueeze(2) * ddsph).sum({1, 3});
}

at::Tensor sum_defined(const at::Tensor &a, const at::Tensor &b)
{
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

class ValueFunction : public torch::autograd::Function<ValueFunction> {
 public:
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &xyz, int64_t l_max,
                            const std::string &prefix)
  {
    ctx->save_for_backward({xyz});
    ctx->saved_data["l_max"] = l_max;
    ctx->saved_data["prefix"] = prefix;
    at::AutoDispatchBelowADInplaceOrView guard;
    return call(prefix, xyz, l_max)[0];
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    auto xyz = ctx->get_saved_variables()[0];
    const auto l_max = ctx->saved_data["l_max"].toInt();
    const auto prefix = ctx->saved_data["prefix"].toStringRef();
    at::Tensor grad_xyz;
    if (grads[0].defined()) {
      // differentiable again through the `_with_gradients` operator
      auto dsph = call(prefix + "_with_gradients", xyz, l_max)[1];
      grad_xyz = contract_gradients(grads[0], dsph);
    }
    return {grad_xyz, at::Tensor(), at::Tensor()};
  }
};

class GradientsFunction : public torch::autograd::Function<GradientsFunction> {
 public:
  static variable_list forward(AutogradContext *ctx, const at::Tensor &xyz, int64_t l_max,
                               const std::string &prefix)
  {
    ctx->saved_data["l_max"] = l_max;
    ctx->saved_data["prefix"] = prefix;
    at::AutoDispatchBelowADInplaceOrView guard;
    auto result = call(prefix + "_with_gradients", xyz, l_max);
    ctx->save_for_backward({xyz, result[1]});
    return {result[0], result[1]};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    auto saved = ctx->get_saved_variables();
    const auto &xyz = saved[0];
    const auto &dsph = saved[1];
    const auto l_max = ctx->saved_data["l_max"].toInt();
    const auto prefix = ctx->saved_data["prefix"].toStringRef();
    at::Tensor grad_xyz;
    if (grads[0].defined()) grad_xyz = contract_gradients(grads[0], dsph);
    if (grads[1].defined()) {
      auto ddsph = call(prefix + "_with_hessians", xyz, l_max)[2];
      grad_xyz = sum_defined(grad_xyz, contract_hessians(grads[1], ddsph));
    }
    return {grad_xyz, at::Tensor(), at::Tensor()};
  }
};

class HessiansFunction : public torch::autograd::Function<HessiansFunction> {
 public:
  static variable_list forward(AutogradContext *ctx, const at::Tensor &xyz, int64_t l_max,
                               const std::string &prefix)
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto result = call(prefix + "_with_hessians", xyz, l_max);
    ctx->save_for_backward({result[1], result[2]});
    return {result[0], result[1], result[2]};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads)
  {
    if (grads[2].defined()) {
      throw std::runtime_error("third derivatives of sphericart's harmonics are not supported");
    }
    auto saved = ctx->get_saved_variables();
    at::Tensor grad_xyz;
    if (grads[0].defined()) grad_xyz = contract_gradients(grads[0], saved[0]);
    if (grads[1].defined()) grad_xyz = sum_defined(grad_xyz, contract_hessians(grads[1], saved[1]));
    return {grad_xyz, at::Tensor(), at::Tensor()};
  }
};

// "sphericart_torch::solid_harmonics_with_gradients" -> "solid_harmonics"
std::string prefix_of(const c10::OperatorHandle &op)
{
  std::string name = op.schema().name();
  name = name.substr(name.find("::") + 2);
  for (const std::string suffix : {"_with_gradients", "_with_hessians"}) {
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      name = name.substr(0, name.size() - suffix.size());
    }
  }
  return name;
}

// the operators take (Tensor xyz, int l_max) and return 1, 2 or 3 tensors
void autograd_kernel(const c10::OperatorHandle &op, torch::jit::Stack *stack)
{
  const auto l_max = stack->back().toInt();
  stack->pop_back();
  const auto xyz = stack->back().toTensor();
  stack->pop_back();
  const auto prefix = prefix_of(op);
  const auto n_outputs = op.schema().returns().size();
  if (n_outputs == 1) {
    stack->emplace_back(ValueFunction::apply(xyz, l_max, prefix));
  } else if (n_outputs == 2) {
    for (auto &tensor : GradientsFunction::apply(xyz, l_max, prefix)) stack->emplace_back(tensor);
  } else {
    for (auto &tensor : HessiansFunction::apply(xyz, l_max, prefix)) stack->emplace_back(tensor);
  }
}

}    // namespace

namespace alchem {

void register_sphericart_autograd()
{
  // registered once per process, kept until the process ends
  static auto library = [] {
    auto library = std::make_unique<torch::Library>(torch::Library::IMPL, "sphericart_torch",
                                                    c10::DispatchKey::Autograd, __FILE__, __LINE__);
    for (const char *name : {"spherical_harmonics", "spherical_harmonics_with_gradients",
                             "spherical_harmonics_with_hessians", "solid_harmonics",
                             "solid_harmonics_with_gradients", "solid_harmonics_with_hessians"}) {
      library->impl(name, torch::CppFunction::makeFromBoxedFunction<&autograd_kernel>());
    }
    return library;
  }();
  (void)library;
}

}    // namespace alchem
